"""graceshut's benchmarks, each beside its baselines, printed as one table.

    python3 benchmarks/run.py all             # the full run (sets up benchmarks/.venv once)
    python3 benchmarks/run.py all --quick     # few rounds, this interpreter (what CI runs)
    python3 benchmarks/run.py MEASURE ...     # middleware throughput drain sequence
                                              # concurrency overshoot memory
    python3 benchmarks/run.py profile         # where the middleware's time goes
    python3 benchmarks/run.py setup           # (re)build benchmarks/.venv only

Full runs save each measure's results in benchmarks/results/<measure>.json, with the
commit, Python and machine they were measured on; benchmarks/render.py writes
docs/benchmarks.md's tables from those files.

A full run executes in the benchmark's own environment, `benchmarks/.venv`, built from
`requirements.txt` (graceshut from this checkout, uvicorn with uvloop and httptools, and
the PyPI peers, pinned). `--here` runs in the current interpreter instead; `--quick`
implies it. Every number is a median of several rounds; baselines run in the same
process, interleaved with graceshut.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from _harness import (
    BENCHMARKS,
    RESULTS,
    ROOT,
    Config,
    Measure,
    add_result_options,
    header_lines,
    render,
    save_result,
)

VENV = BENCHMARKS / ".venv"
REQUIREMENTS = BENCHMARKS / "requirements.txt"
MEASURES = ("middleware", "throughput", "drain", "sequence", "concurrency", "overshoot", "memory")
TITLES = {
    "middleware": "middleware: added per request (in-process)",
    "throughput": "throughput under uvicorn + wrk",
    "drain": "drain: last request ends -> drain done, p99",
    "sequence": "sequence: 1,000 no-op handlers",
    "concurrency": "concurrency: 100 handlers x 100 ms sleep",
    "overshoot": "deadline overshoot, every handler hung",
    "memory": "memory per in-flight request (10,000 held)",
}


def venv_python() -> Path:
    """The benchmark environment's interpreter."""
    return VENV / "bin" / "python"


def in_benchmark_env() -> bool:
    """Whether this process runs in benchmarks/.venv."""
    return Path(sys.prefix).resolve() == VENV.resolve()


def _stamp() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update((ROOT / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def setup(*, force: bool = False) -> None:
    """Build benchmarks/.venv from requirements.txt, unless it is already up to date."""
    stamp = VENV / ".requirements.sha256"
    if not force and venv_python().exists() and stamp.exists() and stamp.read_text() == _stamp():
        return
    print(f"setting up {VENV.relative_to(ROOT)} (once; needs PyPI)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(venv_python()), "-m", "pip", "install", "--quiet"]
    # pip's older resolvers give up on svc-infra's dependency tree.
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", str(ROOT), "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(_stamp())


def _runner(name: str) -> Callable[[Config], list[Measure]]:
    # Imported late: these need starlette and graceshut, which `setup` may install.
    if name == "middleware":
        import middleware_overhead  # noqa: PLC0415

        return middleware_overhead.measure
    if name == "throughput":
        import throughput  # noqa: PLC0415

        return throughput.measure
    if name == "drain":
        import drain_latency  # noqa: PLC0415

        return drain_latency.measure
    if name == "memory":
        import memory  # noqa: PLC0415

        return memory.measure
    import handlers  # noqa: PLC0415

    return {
        "sequence": handlers.measure_sequence,
        "concurrency": handlers.measure_concurrency,
        "overshoot": handlers.measure_overshoot,
    }[name]


def _failure(exc: BaseException) -> str:
    while getattr(exc, "exceptions", None):  # an exception group: show its first leaf
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {exc}"[:300] + " (traceback on stderr)"


def run_measures(
    names: Sequence[str], config: Config, results: Path | None = None, note: str = ""
) -> list[Measure]:
    """Run each measure; one that fails becomes a row that says why, not a crash.

    With *results*, each measure's rows are saved in ``<results>/<name>.json`` as soon
    as it is done (a failed measure saves nothing: the last good result stays).
    """
    measures: list[Measure] = []
    for name in names:
        print(f"running {name}...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            done = _runner(name)(config)
        except Exception as exc:
            traceback.print_exc()
            done = [Measure(name, TITLES[name], "", None, "-", None, [], error=_failure(exc))]
        else:
            command = f"python3 benchmarks/run.py {name}" + (" --quick" if config.quick else "")
            rows = [m.to_dict() for m in done]
            save_result(results, name, command, rows, quick=config.quick, note=note)
        measures += done
        print(f"  {name}: {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    return measures


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command",
        nargs="+",
        choices=("all", "setup", "profile", *MEASURES),
        help="'all', one or more measures, 'profile', or 'setup'",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few rounds (CI); implies --here; saves only with --results",
    )
    parser.add_argument(
        "--here", action="store_true", help="use this interpreter, not benchmarks/.venv"
    )
    add_result_options(parser)
    args = parser.parse_args(argv)
    if args.results is None and not args.quick:
        # Quick numbers are rough: they never replace the saved ones unless asked.
        args.results = RESULTS
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks named on the command line and print the table."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse(arguments)
    commands: list[str] = args.command
    if "setup" in commands:
        setup(force=True)
        print(f"ready: {venv_python().relative_to(ROOT)} benchmarks/run.py all", file=sys.stderr)
        return 0
    if not (args.quick or args.here or in_benchmark_env()):
        setup()
        python = str(venv_python())
        os.execv(python, [python, str(Path(__file__).resolve()), *arguments])  # noqa: S606
    needed = ("starlette", "graceshut")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"{' and '.join(missing)} not installed in {sys.executable}: run without --here "
            "(benchmarks/.venv is set up by itself), or pip install -e '.[dev]' here",
            file=sys.stderr,
        )
        return 2
    config = Config(quick=args.quick)
    if "profile" in commands:
        import profile_request_path  # noqa: PLC0415

        return profile_request_path.main(config, args.results, args.note)
    names = list(MEASURES) if "all" in commands else [c for c in MEASURES if c in commands]
    measures = run_measures(names, config, args.results, args.note)
    import peers  # noqa: PLC0415 - after the environment is settled

    header = header_lines(config, peers.installed())
    print("\n".join(header))
    print()
    print(render(measures))
    return 1 if any(m.error for m in measures) else 0


if __name__ == "__main__":
    sys.exit(main())
