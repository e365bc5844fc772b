"""Every example runs: the apps under real uvicorn with real SIGTERM, the others imported."""

from __future__ import annotations

import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .asgi_servers import HTTP, ROOT, Server, free_port

EXAMPLES = ROOT / "examples"
# A quick sequence: the propagation delay is long enough to see it, short enough to wait.
FAST = {
    "GRACESHUT_GRACE_PERIOD": "20",
    "GRACESHUT_SAFETY_MARGIN": "1",
    "GRACESHUT_PROPAGATION_DELAY": "0.8",
}
PHASE_LINES = [
    "shutdown started (SIGTERM)",
    "phase announce",
    "propagation delay: serving",
    "draining",
    "phase flush",
    "phase release",
    "phase report",
    "finished clean",
]


@contextlib.contextmanager
def uvicorn(app: str, tmp_path: Path, env: dict[str, str]) -> Iterator[Server]:
    """Serve *app* under uvicorn in a subprocess; kill it (and its group) at the end."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", app, "--port", str(port)]
    server = Server(argv, port, tmp_path / f"{app.replace(':', '-')}.events", {**FAST, **env})
    try:
        yield server
    finally:
        server.stop()


def assert_phases_in_order(output: str, lines: list[str] = PHASE_LINES) -> None:
    """The log has these lines, in this order (a phase without handlers logs none)."""
    positions = [output.find(line) for line in lines]
    missing = [line for line, at in zip(lines, positions, strict=True) if at < 0]
    assert not missing, f"missing {missing} in:\n{output}"
    assert positions == sorted(positions), f"phases out of order:\n{output}"


def rows(database: Path, query: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return db.execute(query).fetchall()


@pytest.mark.e2e
def test_the_demo_app_saves_its_page_views_on_sigterm(tmp_path: Path) -> None:
    """examples/app.py: readiness fails, it serves through the delay, drains, saves to SQLite."""
    database = tmp_path / "demo.sqlite3"
    # A delay long enough for the probe of it to land inside it on a loaded machine.
    env = {"DEMO_DATABASE": str(database), "GRACESHUT_PROPAGATION_DELAY": "3"}
    with uvicorn("examples.app:app", tmp_path, env) as server:
        assert database.with_suffix(".lease").exists(), "the lease is taken at startup"
        for _ in range(3):
            assert HTTP.get(f"{server.url}/").status_code == 200
        slow: dict[str, httpx.Response] = {}
        request = threading.Thread(  # outlasts the delay: the drain waits for it
            target=lambda: slow.update(r=HTTP.get(f"{server.url}/slow?seconds=5", timeout=20))
        )
        request.start()
        time.sleep(0.5)  # for the slow request to arrive before the signal
        server.signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while HTTP.get(f"{server.url}/readyz").status_code != 503:
            assert time.monotonic() < deadline, "readiness never failed"
            time.sleep(0.02)
        during = HTTP.get(f"{server.url}/")  # the propagation delay: still served
        assert during.status_code == 200
        assert during.headers["connection"] == "close"
        request.join(20)
        assert slow["r"].status_code == 200, "the in-flight request finished"
        assert server.wait_exit(20) == 0
        output = server.output()
    assert_phases_in_order(output)
    assert "deregistering from the load balancer (reason: SIGTERM)" in output
    draining = re.search(r"draining (\d+) in-flight", output)
    assert draining, output
    assert int(draining[1]) >= 1, "the slow request was still running at the drain"
    assert dict(rows(database, "SELECT path, count FROM views")) == {"/": 4, "/slow": 1}
    assert not database.with_suffix(".lease").exists(), "the release phase removed it"


@pytest.mark.e2e
def test_write_behind_persists_every_buffered_event_on_sigterm(tmp_path: Path) -> None:
    """examples/write_behind.py: events buffered in memory are all in SQLite after SIGTERM."""
    database = tmp_path / "events.sqlite"
    env = {"WRITE_BEHIND_DB": str(database), "WRITE_BEHIND_INTERVAL": "60"}
    with uvicorn("examples.write_behind:app", tmp_path, env) as server:
        for kind in ["click", "view", "click", "buy", "click"]:
            response = httpx.post(f"{server.url}/events", json={"kind": kind})
            assert response.status_code == 202
        assert httpx.get(f"{server.url}/events").json() == {"buffered": 5, "written": 0}
        server.signal(signal.SIGTERM)
        assert server.wait_exit(15) == 0
        output = server.output()
    no_announce_nor_report = [line for line in PHASE_LINES if "announce" not in line]
    assert_phases_in_order(
        output, [line for line in no_announce_nor_report if "report" not in line]
    )
    assert "wrote 5 rows" in output
    assert dict(rows(database, "SELECT kind, count(*) FROM events GROUP BY kind")) == {
        "click": 3,
        "view": 1,
        "buy": 1,
    }


@pytest.mark.e2e
def test_write_behind_spills_when_its_database_fails_and_the_next_start_replays(
    tmp_path: Path,
) -> None:
    """examples/write_behind.py: the table gone at SIGTERM, rows spill; the restart writes them."""
    database, spill = tmp_path / "events.sqlite", tmp_path / "spill"
    spill.mkdir()
    env = {
        "WRITE_BEHIND_DB": str(database),
        "WRITE_BEHIND_INTERVAL": "60",
        "WRITE_BEHIND_SPILL": str(spill),
    }
    with uvicorn("examples.write_behind:app", tmp_path, env) as server:
        for kind in ["click", "view", "click"]:
            assert httpx.post(f"{server.url}/events", json={"kind": kind}).status_code == 202
        with contextlib.closing(sqlite3.connect(database)) as db:
            db.execute("DROP TABLE events")  # the flush will fail: no such table
        server.signal(signal.SIGTERM)
        assert server.wait_exit(15) == 1
        output = server.output()
    assert "fallback spill.file" in output
    assert "spilled 3 rows to" in output
    assert len(list(spill.glob("*.jsonl"))) == 1

    with uvicorn("examples.write_behind:app", tmp_path, env) as server:
        assert httpx.get(f"{server.url}/events").json() == {"buffered": 0, "written": 0}
        server.signal(signal.SIGTERM)
        assert server.wait_exit(15) == 0
        output = server.output()
    assert "replay of sqlalchemy.write_behind[events]: 3 records written from 1 files" in output
    assert sorted(kind for (kind,) in rows(database, "SELECT kind FROM events")) == [
        "click",
        "click",
        "view",
    ]
    assert list(spill.glob("*.jsonl")) == []


@pytest.mark.e2e
def test_the_fastapi_example_runs_every_phase_on_sigterm(tmp_path: Path) -> None:
    """examples/fastapi_app.py: queued jobs finish in the drain, notes and results are saved."""
    database = tmp_path / "fastapi.sqlite3"
    env = {"FASTAPI_DEMO_DATABASE": str(database), "FASTAPI_DEMO_JOB_SECONDS": "0.3"}
    with uvicorn("examples.fastapi_app:app", tmp_path, env) as server:
        assert database.with_suffix(".lock").exists(), "the lock is taken at startup"
        for text in ["first", "second"]:
            assert httpx.post(f"{server.url}/notes", json={"text": text}).status_code == 202
        assert httpx.post(f"{server.url}/notes", json={}).status_code == 422
        for name in ["a", "b", "c"]:  # 0.9 s of queued work: more than the delay
            assert httpx.post(f"{server.url}/jobs/{name}").status_code == 202
        server.signal(signal.SIGTERM)
        assert server.wait_exit(15) == 0
        output = server.output()
    assert_phases_in_order(output)
    assert output.index("job queue closed and empty") < output.index("phase flush")
    assert sorted(rows(database, "SELECT kind, value FROM records")) == [
        ("job", "a"),
        ("job", "b"),
        ("job", "c"),
        ("note", "first"),
        ("note", "second"),
    ]
    assert not database.with_suffix(".lock").exists(), "the release phase removed it"
    report = database.with_suffix(".report.json").read_text()
    assert '"ok": true' in report
    assert '"reason": "SIGTERM"' in report


@pytest.mark.parametrize("module", ["examples.redis_locks", "examples.logging_formats"])
def test_the_other_examples_import(module: str) -> None:
    """The examples that need a Redis server or a terminal at least import and build."""
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True, timeout=30)


def test_logging_formats_prints_one_json_object_per_line() -> None:
    """`python -m examples.logging_formats json` logs the whole run as JSON lines."""
    result = subprocess.run(
        [sys.executable, "-m", "examples.logging_formats", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    lines = result.stdout.splitlines()
    assert lines
    assert all(line.startswith("{") and line.endswith("}") for line in lines), lines
    assert any('"logger": "graceshut"' in line for line in lines)


def test_the_dockerfile_runs_uvicorn_as_pid_1_as_a_non_root_user() -> None:
    """examples/Dockerfile: exec-form CMD, a non-root USER, 0.0.0.0, port 8000 exposed."""
    text = (EXAMPLES / "Dockerfile").read_text()
    instructions = [
        line.strip()
        for line in re.sub(r"\\\n", " ", text).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert instructions[0].startswith("FROM python:")
    assert "slim" in instructions[0]
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users, "no USER instruction"
    assert users[-1] not in {"root", "0", "0:0"}
    starts = [line for line in instructions if line.startswith(("CMD ", "ENTRYPOINT "))]
    assert starts, "no CMD or ENTRYPOINT"
    assert all(line.split(None, 1)[1].startswith("[") for line in starts), "shell form"
    assert any('"0.0.0.0"' in line for line in starts)
    assert "EXPOSE 8000" in instructions


def test_the_quick_start_page_shows_the_tested_examples() -> None:
    """docs/quickstart.md's Python blocks are the examples, whole or as in-order excerpts."""
    page = (ROOT / "docs" / "quickstart.md").read_text()
    blocks = re.findall(r"<!-- (file|excerpt): (\S+) -->\n```python\n(.*?)```", page, re.DOTALL)
    assert len(blocks) == len(re.findall(r"```python", page)), "a block without its source"
    assert {kind for kind, _, _ in blocks} == {"file", "excerpt"}
    for kind, source, code in blocks:
        text = (ROOT / source).read_text()
        if kind == "file":
            assert code == text, f"{source} changed: update docs/quickstart.md"
            continue
        lines = iter(text.splitlines())
        for line in filter(None, code.splitlines()):
            assert line in lines, f"{line!r} is not in {source} (or not in this order)"
