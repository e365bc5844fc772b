"""What every measure shares: result rows, statistics, the machine, and the table.

Stdlib only, so that `run.py` can print its header and set up its environment before
anything else is importable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent


@dataclasses.dataclass(frozen=True)
class Config:
    """How much work each measure does: `quick` keeps CI under a minute on two cores."""

    quick: bool

    def pick(self, full: int, quick: int) -> int:
        """The full-run value, or the quick one."""
        return quick if self.quick else full

    def pick_float(self, full: float, quick: float) -> float:
        """The full-run value, or the quick one."""
        return quick if self.quick else full


@dataclasses.dataclass
class Line:
    """One baseline compared with graceshut, inside one measure."""

    baseline: str
    baseline_value: float | None
    ratio: float | None = None
    note: str = ""


@dataclasses.dataclass
class Measure:
    """One measure of the issue: graceshut's number, its goal, and its baselines.

    `ratio` in every line is graceshut's value divided by that baseline's, in the same
    unit, so below 1 means "graceshut takes less" for times and "serves less" for rates.
    """

    key: str
    title: str
    unit: str
    graceshut: float | None
    goal: str
    met: bool | None
    lines: list[Line]
    detail: str = ""
    error: str = ""
    skipped: str = ""
    #: Other numbers of the same measure, by label, in its unit (rendered beside it).
    values: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return dataclasses.asdict(self)


def median(samples: Sequence[float]) -> float:
    """The median; the one number reported for several rounds."""
    return statistics.median(samples)


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, or None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def version_of(distribution: str) -> str | None:
    """The installed version of *distribution*, or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


# -- the machine -----------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, else the count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def tool_version(command: list[str]) -> str | None:
    """The first line a tool prints about its version, or None when it is missing."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else command[0]


#: The machine's load average when the run started, before it added its own.
LOAD_AT_START = os.getloadavg() if hasattr(os, "getloadavg") else None


def header_lines(config: Config, peers: Iterable[str]) -> list[str]:
    """The machine and the software the numbers come from."""
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    libraries = ", ".join(
        f"{name} {version_of(name) or 'missing'}"
        for name in ("graceshut", "starlette", "anyio", "uvicorn", "trio")
    )
    server_extras = [
        f"{name} {version}"
        for name in ("uvloop", "httptools")
        if (version := version_of(name)) is not None
    ]
    load = tool_version(["wrk", "--version"]) or "wrk not installed"
    load = load.split(" Copyright")[0]
    hey = "hey installed" if shutil.which("hey") else "hey not installed"
    return [
        (
            f"machine:   {cpu_model()}, {usable_cores()} cores usable of {os.cpu_count()}"
            f"{memory}, {platform.system()} {platform.release()}"
        ),
        f"python:    {platform.python_implementation()} {platform.python_version()}",
        f"libraries: {libraries}",
        "busy:      load average before the run "
        + (" ".join(f"{v:.2f}" for v in LOAD_AT_START) if LOAD_AT_START else "unknown")
        + f" (1, 5, 15 min) on {os.cpu_count()} cores",
        "server:    uvicorn with "
        + (
            ", ".join(server_extras) if server_extras else "asyncio loop, h11 (no uvloop/httptools)"
        ),
        f"load:      {load}; {hey}",
        "peers:     " + (", ".join(peers) or "none installed (python benchmarks/run.py setup)"),
        "mode:      "
        + ("quick (few rounds, smaller baselines: numbers are rough)" if config.quick else "full"),
    ]


# -- the table -------------------------------------------------------------------


def format_value(value: float | None, unit: str) -> str:
    """A number in its unit, with sensible precision."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}"


def format_ratio(value: float | None) -> str:
    """A ratio with enough digits to tell 0.98 from 0.99."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2g}"


def render(measures: Sequence[Measure]) -> str:
    """The results as a fixed-width table, one block of lines per measure."""
    columns = ("measure", "baseline", "baseline value", "graceshut", "ratio", "goal", "met?")
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for measure in measures:
        met = {True: "yes", False: "NO", None: "-"}[measure.met]
        if measure.error or measure.skipped:
            why = "FAILED" if measure.error else "SKIPPED"
            rows.append((measure.title, why, "-", "-", "-", measure.goal, "-"))
            notes.append(f"{measure.title}: {why}: {measure.error or measure.skipped}")
            continue
        graceshut = format_value(measure.graceshut, measure.unit)
        lines = measure.lines or [Line("-", None)]
        for index, line in enumerate(lines):
            first = index == 0
            rows.append(
                (
                    measure.title if first else "",
                    line.baseline,
                    format_value(line.baseline_value, measure.unit)
                    if line.baseline_value is not None
                    else (line.note or "-"),
                    graceshut if first else "",
                    format_ratio(line.ratio),
                    measure.goal if first else "",
                    met if first else "",
                )
            )
            if line.note and line.baseline_value is not None:
                notes.append(f"{measure.title} / {line.baseline}: {line.note}")
        if measure.detail:
            notes.append(f"{measure.title}: {measure.detail}")
    widths = [max(len(row[i]) for row in (columns, *rows)) for i in range(len(columns))]
    out = [
        " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
        "-+-".join("-" * w for w in widths),
    ]
    out += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    if notes:
        out.append("")
        out.append("notes:")
        out += [f"- {note}" for note in notes]
    return "\n".join(line.rstrip() for line in out)


# -- the result files --------------------------------------------------------------

#: Where full runs save their results, one JSON file per measure; docs/benchmarks.md is
#: rendered from them (benchmarks/render.py).
RESULTS = BENCHMARKS / "results"
#: Libraries whose versions are saved with every result.
LIBRARIES = ("graceshut", "starlette", "anyio", "uvicorn", "uvloop", "httptools", "trio")


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _os_name() -> str:
    name = platform.system()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{name}, {platform.system()} {platform.release()}"


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _code() -> tuple[str, bool]:
    changes = _git("status", "--porcelain", "--", "src", "benchmarks", ":!benchmarks/results")
    return _git("rev-parse", "HEAD") or "unknown", bool(changes)


#: The commit the measured code comes from, and whether it had uncommitted changes, when
#: the run started (a commit made while a long run goes on is not what it measured).
CODE_AT_START = _code()


def run_info(*, quick: bool, note: str = "") -> dict[str, object]:
    """What a result was measured on: the commit, Python, libraries and the machine.

    ``dirty`` says the measured code differed from the commit when the run started
    (changes under src/ or benchmarks/, other than the result files themselves). The
    load averages before and after the run tell how busy the machine was; *note* says
    what was known about it.
    """
    commit, dirty = CODE_AT_START
    return {
        "commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "quick" if quick else "full",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "libraries": {name: version_of(name) for name in LIBRARIES},
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "cores_usable": usable_cores(),
            "memory_gib": _memory_gib(),
            "os": _os_name(),
            "load_before": [round(v, 2) for v in LOAD_AT_START] if LOAD_AT_START else None,
            "load_after": [round(v, 2) for v in os.getloadavg()]
            if hasattr(os, "getloadavg")
            else None,
            "note": note,
        },
    }


def add_result_options(parser: argparse.ArgumentParser) -> None:
    """``--results DIR`` and ``--note TEXT``, shared by every command that saves results."""
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"save the result files in DIR (default: {RESULTS.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--note", default="", help="what is known about the machine's load, saved with the results"
    )


def save_result(
    directory: Path | None,
    name: str,
    command: str,
    results: object,
    *,
    quick: bool,
    note: str = "",
) -> Path | None:
    """Write ``<directory>/<name>.json``: *results* with the run's commit and machine."""
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    payload = {
        "name": name,
        "command": command,
        "run": run_info(quick=quick, note=note),
        "results": results,
    }
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    print(f"saved {path}", file=sys.stderr)
    return path
