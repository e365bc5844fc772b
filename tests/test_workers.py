"""The worker group's files, with real processes standing in for sibling workers.

The end-to-end behaviour under gunicorn, uvicorn and hypercorn is in
``tests/e2e/test_workers.py``; this checks the bookkeeping those runs rely on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from graceshut._process._workers import WorkerGroup


@pytest.fixture
def sibling_pid() -> Iterator[int]:
    """A live process whose PID plays a sibling worker's."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def test_join_makes_a_private_directory_and_refuses_a_planted_one(tmp_path: Path) -> None:
    mine = WorkerGroup(tmp_path / "group")
    mine.join()
    try:
        assert (tmp_path / "group").stat().st_mode & 0o777 == 0o700
        assert (tmp_path / "group" / f"{os.getpid()}.sock").exists()
    finally:
        mine.leave()
    assert not (tmp_path / "group").exists(), "the last worker out removes the directory"
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o755)
    planted.chmod(0o755)
    with pytest.raises(PermissionError, match="not a private directory"):
        WorkerGroup(planted).join()


def test_the_first_claim_leads_and_the_second_gets_its_deadline(
    tmp_path: Path, sibling_pid: int
) -> None:
    me, sibling = WorkerGroup(tmp_path), WorkerGroup(tmp_path, pid=sibling_pid)
    me.join()
    sibling.join()
    try:
        assert not me.triggered()
        assert me.claim("prestop", 1000.0) == (True, "prestop", 1000.0)
        assert sibling.claim("SIGTERM", 1003.0) == (False, "prestop", 1000.0)
        assert sibling.trigger() == ("prestop", 1000.0)
        assert me.triggered()
    finally:
        sibling.leave()
        me.leave()


def test_others_serving_until_every_sibling_stops_or_the_pod_is_triggered(
    tmp_path: Path, sibling_pid: int
) -> None:
    me, sibling = WorkerGroup(tmp_path), WorkerGroup(tmp_path, pid=sibling_pid)
    me.join()
    assert not me.others_serving(), "alone in the group"
    sibling.join()
    try:
        me.mark_stopping()
        assert me.others_serving(), "a recycle: the sibling serves on"
        sibling.mark_stopping()
        assert not me.others_serving(), "the supervisor signalled every worker"
        sibling.leave()
        sibling.join()  # a replacement worker that reuses the PID starts afresh
        assert me.others_serving()
        me.claim("prestop", 1000.0)
        assert not me.others_serving(), "the pod's shutdown takes every worker"
    finally:
        sibling.leave()
        me.leave()


def test_a_dead_siblings_files_are_dropped(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    me, dead = WorkerGroup(tmp_path), WorkerGroup(tmp_path, pid=process.pid)
    me.join()
    dead.join()
    dead.mark_stopping()
    try:
        assert me.siblings() == []
        assert not (tmp_path / f"{process.pid}.sock").exists()
        assert not me.others_serving()
    finally:
        me.leave()
        dead.leave()
    assert not tmp_path.exists()


@pytest.mark.anyio
async def test_a_worker_started_after_the_pods_trigger_follows_it_and_does_not_lead(
    tmp_path: Path, sibling_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that joins once a sibling has claimed the trigger runs its sequence at once,
    as a follower: the once-per-pod handlers stay the leader's."""
    import graceshut

    directory = tmp_path / "group"
    sibling = WorkerGroup(directory, pid=sibling_pid)
    sibling.join()
    assert sibling.claim("prestop", time.time())[0]
    monkeypatch.setenv("GRACESHUT_WORKER_DIR", str(directory))
    coordinator = graceshut.Coordinator(
        grace_period=10, safety_margin=0.5, propagation_delay=0, environ={}
    )
    ran: list[str] = []
    coordinator.add_handler(lambda: ran.append("each"), name="each")
    coordinator.add_handler(lambda: ran.append("once"), name="once", once_per_pod=True)
    async with coordinator.lifespan(signals=False):
        report = await coordinator.wait()
    sibling.leave()
    assert report.reason == "prestop"
    assert ran == ["each"]
    assert [h.name for h in report.handlers] == ["each"]


@pytest.mark.anyio
async def test_a_group_directory_that_cannot_be_made_leaves_the_worker_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unusable group directory is a warning, not a failed start: the worker still runs."""
    import graceshut

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GRACESHUT_WORKER_DIR", str(blocker / "group"))
    coordinator = graceshut.Coordinator(
        grace_period=10, safety_margin=0.5, propagation_delay=0, environ={}
    )
    async with coordinator.lifespan(signals=False):
        assert not coordinator.others_serving()
    assert coordinator.report is not None
    assert coordinator.report.ok
    assert "cannot join the other worker processes" in caplog.text
