"""The benchmark suite runs end to end in its quick mode, so that it cannot rot.

No timing is asserted: CI machines are shared and noisy. What is checked is that every
measure runs and lands in the table (or, for throughput without a load generator, says
clearly that it was skipped and how to install one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e  # starts uvicorn servers and a load generator

TITLES = {
    "middleware": "middleware: added per request",
    "drain-asyncio": "drain: request ends -> drain done",
    "sequence": "sequence: 1,000 no-op handlers",
    "concurrency": "concurrency: 100 handlers x 100 ms",
    "overshoot": "deadline overshoot, every handler hung",
    "memory": "memory per in-flight request",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, dict[str, object]]]:
    results = tmp_path_factory.mktemp("bench") / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "all",
            "--quick",
            "--json",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    measures = {m["key"]: m for m in json.loads(results.read_text())["measures"]}
    return done.stdout, measures


def test_quick_run_prints_the_machine_and_every_measure(
    quick_run: tuple[str, dict[str, dict[str, object]]],
) -> None:
    """`run.py all --quick` exits 0 and prints the header and a row for each measure."""
    stdout, measures = quick_run
    for label in ("machine:", "python:", "libraries:", "server:", "peers:", "mode:      quick"):
        assert label in stdout
    for key, title in TITLES.items():
        assert key in measures
        assert title in stdout
        assert not measures[key]["error"]
        assert measures[key]["graceshut"] is not None


def test_every_measure_has_a_baseline_beside_graceshut(
    quick_run: tuple[str, dict[str, dict[str, object]]],
) -> None:
    """Each measure that ran shows at least one baseline with a value and a ratio."""
    _, measures = quick_run
    for key, measure in measures.items():
        if measure["skipped"]:
            continue
        lines = measure["lines"]
        assert isinstance(lines, list)
        measured = [line for line in lines if line["baseline_value"] is not None]
        assert measured, key
        assert all(line["ratio"] is not None for line in measured), key


def test_throughput_runs_or_says_how_to_get_a_load_generator(
    quick_run: tuple[str, dict[str, dict[str, object]]],
) -> None:
    """With wrk or hey the throughput rows are there; without, the row says to install wrk."""
    stdout, measures = quick_run
    throughput = measures["throughput"]
    if throughput["skipped"]:
        assert "apt-get install -y wrk" in stdout
    else:
        assert "throughput-cpu" in measures
        assert "throughput, uvicorn" in stdout


def test_instruction_counts_run_under_valgrind_for_every_app() -> None:
    """benchmarks/instructions.py counts each app under callgrind and prints its row.

    Tiny counts, one stack (asyncio + h11 needs no extra): this checks that the tool
    works, not what it finds. The one relation asserted, graceshut's app executing more
    than the bare app, holds by 4,000-6,000 instructions a request here, several times
    what so few requests move between launches.
    """
    script = str(ROOT / "benchmarks" / "instructions.py")
    small = ["--requests", "100", "--warmup", "50", "--launches", "1", "--stack", "asyncio+h11"]
    done = subprocess.run(
        [sys.executable, script, *small],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    rows = {
        line.split()[0]: float(line.split()[1].replace(",", ""))
        for line in done.stdout.splitlines()
        if line.startswith("  ") and "ratio to bare" in line
    }
    assert set(rows) == {"bare", "counter", "closing", "graceshut"}, done.stdout
    assert all(count > 0 for count in rows.values())
    assert rows["graceshut"] > rows["bare"], done.stdout
    assert "graceshut - counter:" in done.stdout
