"""The benchmarks run end to end with tiny counts, and docs/benchmarks.md is what they saved.

No timing is asserted: CI machines are shared and noisy. What is checked is that every
command the page names runs and saves its result file (with the commit, Python and
machine), that the renderer reads what the commands write today, and that the page is
exactly what `benchmarks/render.py` writes from the committed results, so a hand edit,
a stale table or a goal the code no longer sets fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PAGE = ROOT / "docs" / "benchmarks.md"

pytestmark = pytest.mark.e2e  # starts uvicorn servers, a load generator, PostgreSQL

TITLES = {
    "middleware": "middleware: added per request",
    "drain-asyncio": "drain: request ends -> drain done",
    "sequence": "sequence: 1,000 no-op handlers",
    "concurrency": "concurrency: 100 handlers x 100 ms",
    "overshoot": "deadline overshoot, every handler hung",
    "memory": "memory per in-flight request",
}
#: Every command docs/benchmarks.md names, and the test that runs it here.
SMOKED = {
    "python3 benchmarks/run.py all": "quick_run (`all --quick`)",
    "python3 benchmarks/run.py all --quick": "quick_run",
    "python3 benchmarks/run.py sequence": "test_one_measure_saves_only_its_own_file",
    "python3 benchmarks/run.py profile": "test_profile_prices_the_parts_of_todays_request_path",
    "benchmarks/.venv/bin/python benchmarks/instructions.py": (
        "test_instruction_counts_run_under_valgrind_for_every_app"
    ),
    ".venv/bin/python benchmarks/spill.py": "test_spill_times_the_fallback_and_the_replay",
    ".venv/bin/python benchmarks/propagation_delay.py": (
        "test_propagation_delay_runs_every_case_and_a_rollout"
    ),
    "python3 benchmarks/render.py": "test_render_rewrites_a_stale_page",
    # Builds benchmarks/.venv from PyPI (minutes, network): the full run's first step,
    # exercised by every full run rather than in CI.
    "python3 benchmarks/run.py setup": "not run in CI",
}


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def render() -> Iterator[object]:
    """benchmarks/render.py, imported as its commands import each other."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import render as module

        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    results = tmp_path_factory.mktemp("bench")
    run = str(BENCHMARKS / "run.py")
    done = _run(run, "all", "--quick", "--results", str(results), "--note", "a smoke test")
    return done.stdout, results


#: The result files of run.py's measures (a list of measures each).
MEASURE_FILES = ("middleware", "throughput", "drain", "sequence", "concurrency", "overshoot")
MEASURE_FILES += ("memory",)


def _measures(results: Path) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for name in MEASURE_FILES:
        path = results / f"{name}.json"
        for measure in json.loads(path.read_text())["results"] if path.exists() else []:
            found[measure["key"]] = measure
    return found


def test_quick_run_prints_the_machine_and_every_measure(quick_run: tuple[str, Path]) -> None:
    """`run.py all --quick` exits 0 and prints the header and a row for each measure."""
    stdout, results = quick_run
    measures = _measures(results)
    for label in ("machine:", "python:", "libraries:", "server:", "peers:", "mode:      quick"):
        assert label in stdout
    for key, title in TITLES.items():
        assert key in measures
        assert title in stdout
        assert not measures[key]["error"]
        assert measures[key]["graceshut"] is not None


def test_each_result_file_says_what_it_measured_and_on_what(quick_run: tuple[str, Path]) -> None:
    """Each measure's file holds its command, the commit, Python and a machine summary."""
    _, results = quick_run
    assert {path.stem for path in results.glob("*.json")} == set(MEASURE_FILES)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.strip()
    for path in results.glob("*.json"):
        saved = json.loads(path.read_text())
        assert saved["command"] == f"python3 benchmarks/run.py {path.stem} --quick"
        run = saved["run"]
        assert run["commit"] == head
        assert run["mode"] == "quick"
        assert run["python"].endswith(".".join(map(str, sys.version_info[:3])))
        machine = run["machine"]
        assert machine["cpu"]
        assert machine["cores"] >= machine["cores_usable"] >= 1
        assert machine["os"]
        assert machine["note"] == "a smoke test"


def test_every_measure_has_a_baseline_beside_graceshut(quick_run: tuple[str, Path]) -> None:
    """Each measure that ran shows at least one baseline with a value and a ratio."""
    _, results = quick_run
    for key, measure in _measures(results).items():
        if measure["skipped"]:
            continue
        lines = measure["lines"]
        assert isinstance(lines, list)
        measured = [line for line in lines if line["baseline_value"] is not None]
        assert measured, key
        assert all(line["ratio"] is not None for line in measured), key


def test_throughput_runs_or_says_how_to_get_a_load_generator(
    quick_run: tuple[str, Path],
) -> None:
    """With wrk or hey the throughput rows are there; without, the row says to install wrk."""
    stdout, results = quick_run
    throughput = _measures(results)["throughput"]
    if throughput["skipped"]:
        assert "apt-get install -y wrk" in stdout
    else:
        assert "throughput-cpu" in _measures(results)
        assert "throughput-paired" in _measures(results)
        assert "throughput, uvicorn" in stdout


def test_the_renderer_reads_what_the_measures_write_today(
    quick_run: tuple[str, Path], render: object
) -> None:
    """Each of run.py's fresh result files renders, with its command and commit on top."""
    _, results = quick_run
    for name in render.MEASURES:  # type: ignore[attr-defined]
        block = "\n".join(render.BLOCKS[name](results))  # type: ignore[attr-defined]
        assert f"`python3 benchmarks/run.py {name} --quick`" in block
        assert "quick mode: rough numbers" in block
        assert "| **graceshut** |" in block


def test_the_saved_goals_are_the_codes_goals(quick_run: tuple[str, Path]) -> None:
    """A goal changed in the code makes the committed results stale: they must be rerun."""
    _, fresh = quick_run
    today = {key: m["goal"] for key, m in _measures(fresh).items() if not m["skipped"]}
    saved = {key: m["goal"] for key, m in _measures(BENCHMARKS / "results").items()}
    for key, goal in today.items():
        assert saved.get(key) == goal, key
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import instructions
    finally:
        sys.path.remove(str(BENCHMARKS))
    counted = json.loads((BENCHMARKS / "results" / "instructions.json").read_text())
    assert f"<= {instructions.GOAL_POINTS:g} point" in counted["results"]["goal"]


def test_one_measure_saves_only_its_own_file(tmp_path: Path) -> None:
    """`run.py sequence` runs that measure alone and saves sequence.json, nothing else."""
    _run(str(BENCHMARKS / "run.py"), "sequence", "--quick", "--results", str(tmp_path))
    assert [path.name for path in tmp_path.iterdir()] == ["sequence.json"]


def test_profile_prices_the_parts_of_todays_request_path(tmp_path: Path, render: object) -> None:
    """`run.py profile` times every variant of today's hot path and saves what it found."""
    run = str(BENCHMARKS / "run.py")
    done = _run(run, "profile", "--quick", "--results", str(tmp_path))
    assert "copy of the hot path" in done.stdout
    saved = json.loads((tmp_path / "profile.json").read_text())["results"]
    variants = {row["variant"] for row in saved["parts"]["variants"]}
    assert {"the real middleware", "copy of the hot path", "without the send wrapper"} <= variants
    assert all(row["bytes"] > 0 for row in saved["memory"]["rows"])
    block = "\n".join(render.profile_block(tmp_path))  # type: ignore[attr-defined]
    assert "| copy of the hot path |" in block


def test_instruction_counts_run_under_valgrind_for_every_app(
    tmp_path: Path, render: object
) -> None:
    """benchmarks/instructions.py counts each app under callgrind and saves its counts.

    Tiny counts, one stack (asyncio + h11 needs no extra): this checks that the tool
    works, not what it finds. No relation between the apps is asserted: over so few
    requests, work that follows the wall clock (uvicorn's date header, once a second)
    falls on a slow launch more often, and a loaded machine moves the counts by more
    than graceshut adds.
    """
    script = str(BENCHMARKS / "instructions.py")
    small = ["--requests", "100", "--warmup", "50", "--launches", "1", "--stack", "asyncio+h11"]
    done = _run(script, *small, "--results", str(tmp_path), timeout=600)
    rows = {
        line.split()[0]: float(line.split()[1].replace(",", ""))
        for line in done.stdout.splitlines()
        if line.startswith("  ") and "ratio to bare" in line
    }
    assert set(rows) == {"bare", "counter", "closing", "graceshut"}, done.stdout
    assert all(count > 0 for count in rows.values())
    assert "graceshut - counter:" in done.stdout
    saved = json.loads((tmp_path / "instructions.json").read_text())
    assert saved["run"]["mode"] == "quick"
    assert set(saved["results"]["stacks"]) == {"asyncio+h11"}
    assert "| asyncio+h11 |" in "\n".join(render.instructions_block(tmp_path))  # type: ignore[attr-defined]


def test_spill_times_the_fallback_and_the_replay(tmp_path: Path, render: object) -> None:
    """benchmarks/spill.py spills and replays into a PostgreSQL it starts, and saves it."""
    script = str(BENCHMARKS / "spill.py")
    _run(script, "--rounds", "1", "--results", str(tmp_path))
    saved = json.loads((tmp_path / "spill.json").read_text())["results"]
    steps = [row["step"] for row in saved["timings"]]
    assert steps[0] == "spill to a file (fsync)"
    assert len(steps) == 4
    assert "| replay into PostgreSQL |" in "\n".join(render.spill_block(tmp_path))  # type: ignore[attr-defined]


def test_the_page_is_what_the_saved_results_render_to() -> None:
    """`render.py --check` passes on docs/benchmarks.md: no table differs from the results."""
    _run(str(BENCHMARKS / "render.py"), "--check")


def test_render_rewrites_a_stale_page(tmp_path: Path) -> None:
    """A number edited by hand inside a table is put back by `render.py`; --check catches it."""
    page = tmp_path / "benchmarks.md"
    text = PAGE.read_text()
    stale = re.sub(r"(<!-- results:middleware -->.*?\| \*\*)\d", r"\g<1>9", text, flags=re.DOTALL)
    assert stale != text
    page.write_text(stale)
    check = [sys.executable, str(BENCHMARKS / "render.py"), "--check", "--page", str(page)]
    assert subprocess.run(check, capture_output=True, cwd=ROOT, check=False).returncode == 1
    _run(str(BENCHMARKS / "render.py"), "--page", str(page))
    assert page.read_text() == text


def test_every_result_file_is_rendered_on_the_page(render: object) -> None:
    """Each committed result file has its block on the page, and the goals have theirs."""
    names = set(render.block_names(PAGE.read_text()))  # type: ignore[attr-defined]
    saved = {path.stem for path in (BENCHMARKS / "results").glob("*.json")}
    assert saved | {"goals"} == names


def _prose(text: str) -> str:
    """The page without its rendered blocks and code blocks."""
    text = re.sub(r"<!-- results:([a-z_-]+) -->.*?<!-- /results:\1 -->", "", text, flags=re.DOTALL)
    return re.sub(r"```.*?```", "", text, flags=re.DOTALL)


def test_the_prose_quotes_no_measured_number() -> None:
    """Outside the rendered tables, no decimal and no number in a unit of a result."""
    prose = _prose(PAGE.read_text())
    decimals = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", prose)
    units = r"us|µs|ns|%|points?|B|KB|MB|GiB|req/s|rows/s|instructions"
    measured = re.findall(rf"\b\d[\d,]*\s?(?:{units})\b", prose)
    assert not decimals, decimals
    assert not measured, measured
    assert "/work/" not in PAGE.read_text()
    assert "/home/" not in PAGE.read_text()


def test_the_page_names_only_commands_run_here() -> None:
    """Every command in the page's table is one that a test in this file runs."""
    table = re.findall(r"^\| `([^`]+)` \|", PAGE.read_text(), flags=re.MULTILINE)
    assert table
    assert set(table) <= set(SMOKED), set(table) - set(SMOKED)


def test_propagation_delay_runs_every_case_and_a_rollout(tmp_path: Path, render: object) -> None:
    """benchmarks/propagation_delay.py restarts pods behind HAProxy and saves each case."""
    script = str(BENCHMARKS / "propagation_delay.py")
    done = _run(
        script, "--restarts", "1", "--replicas", "1", "--cap", "3", "--results", str(tmp_path),
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "propagation_delay.json").read_text())["results"]
    assert set(saved["restarts"]) == {
        "routers stop within 1 s", "routers stop within 10 s", "a trickle, 0.2 req/s", "idle",
    }  # fmt: skip
    assert all(
        run["ended"] in {"evidence", "cap"} for runs in saved["restarts"].values() for run in runs
    )
    assert [run["ended"] for run in saved["restarts"]["idle"]] == ["cap"]
    assert set(saved["rollout"]) == {"auto", "fixed 3 s"}
    assert "| rollout of 1 replicas |" in "\n".join(render.propagation_block(tmp_path))  # type: ignore[attr-defined]
