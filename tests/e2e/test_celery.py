"""Celery workers on a real Redis broker, stopped as the kubelet stops them.

Each test starts its own ``redis-server`` and a real ``celery worker`` (prefork or
threads, ``-c 2``, ``acks_late``), gives it a 60 s task, a 3 s task and 5 ETA tasks due
in 30 s, then plays the kubelet with a 12 s grace period: SIGTERM (after a preStop
call, or through ``graceshut run``), SIGKILL at 12 s if the worker is still there.
A second worker started afterwards shows what the first one handed back: it runs the
long task (shortened by ``CELERY_TEST_SLEEP_CAP``) and the ETA tasks, each once.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from graceshut.cli._run import call_shutdown_route

from ..asgi_servers import ROOT, free_port
from ..contrib._servers import RedisServer

pytestmark = pytest.mark.e2e

GRACE = 12.0
ETA = 30.0
ETA_TAGS = [f"eta{i}" for i in range(5)]
HANDED_BACK = ["long", *ETA_TAGS]


class Worker:
    """A ``celery worker`` subprocess of ``tests/e2e/celery_app.py``."""

    def __init__(
        self, tmp: Path, redis_url: str, *, pool: str, graceshut: bool, name: str, **env: str
    ) -> None:
        self.admin_port = free_port()
        self.report = tmp / f"{name}-report.json"
        self.log = tmp / f"{name}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "tests.e2e.celery_app", "worker",
            "--pool", pool, "--concurrency", "2", "--loglevel", "INFO", "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        if env.pop("under_run", ""):
            command = [sys.executable, "-m", "graceshut.cli", "run", "--", *command]
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "CELERY_TEST_BROKER": f"{redis_url}/0",
            "CELERY_TEST_LEDGER": f"{redis_url}/1",
            "CELERY_TEST_GRACESHUT": "1" if graceshut else "0",
            "CELERY_TEST_REPORT": str(self.report),
            "GRACESHUT_GRACE_PERIOD": str(GRACE),
            "GRACESHUT_ADMIN_ADDRESS": f"127.0.0.1:{self.admin_port}",
            "GRACESHUT_SECRET_DIR": str(tmp / "secret"),
            **env,
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def probe(self, path: str) -> int | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=1.0).status_code
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            if self.probe("/readyz") == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.output()}")

    def wait_consuming(self, ledger: redis.Redis, timeout: float = 30.0) -> None:
        """For a worker without graceshut (no probes): until its log says it is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            if " ready." in self.output():
                return
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def secret_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pod secret's directory, shared by the worker and the preStop client here."""
    monkeypatch.setenv("GRACESHUT_SECRET_DIR", str(tmp_path / "secret"))
    return tmp_path / "secret"


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def send_tasks(url: str) -> dict[str, str]:
    """The long task, the short one and the ETA tasks; their ids by tag."""
    from celery import Celery

    client = Celery("client", broker=f"{url}/0")
    ids = {
        "long": client.send_task("work.sleep", args=(60, "long")).id,
        "short": client.send_task("work.sleep", args=(3, "short")).id,
    }
    for tag in ETA_TAGS:
        ids[tag] = client.send_task("work.sleep", args=(1, tag), countdown=ETA).id
    return ids


def wait_started(ledger: redis.Redis, tags: set[str], worker: Worker) -> None:
    deadline = time.monotonic() + 30
    while {t.decode() for t in ledger.lrange("started", 0, -1)} < tags:
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.05)
    time.sleep(0.5)  # the ETA messages reach the worker with the others


class Kubelet:
    """Plays the termination: the trigger, probes every 0.1 s, SIGKILL at the grace period."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.probes: list[tuple[float, str, int]] = []
        self.exit_after = 0.0
        self.killed = False
        self.prestop_status: int | None = None
        self.metrics: str | None = None

    def terminate(self, how: str) -> int:
        worker = self.worker
        started = time.monotonic()
        done = threading.Event()
        watcher = threading.Thread(target=self._probe, args=(started, done), daemon=True)
        watcher.start()
        if how == "prestop":
            # The exec hook's call (`graceshut prestop`'s client); then the SIGTERM.
            self.prestop_status = call_shutdown_route(
                f"http://127.0.0.1:{worker.admin_port}/shutdown"
            )
        worker.process.send_signal(signal.SIGTERM)
        try:
            code = worker.process.wait(max(0.1, GRACE - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            code = worker.process.wait()
            self.killed = True
        self.exit_after = time.monotonic() - started
        done.set()
        watcher.join()
        return code

    def _probe(self, started: float, done: threading.Event) -> None:
        while not done.is_set():
            if self.metrics is None and time.monotonic() - started > 0.3:
                with contextlib.suppress(httpx.HTTPError):
                    self.metrics = httpx.get(
                        f"http://127.0.0.1:{self.worker.admin_port}/metrics", timeout=1.0
                    ).text
            for path in ("/livez", "/readyz"):
                sent = time.monotonic() - started
                status = self.worker.probe(path)
                if status is not None:
                    self.probes.append((sent, path, status))
            time.sleep(0.1)


def runs(ledger: redis.Redis, key: str) -> collections.Counter[str]:
    return collections.Counter(t.decode() for t in ledger.lrange(key, 0, -1))


def second_worker(
    tmp: Path,
    url: str,
    ledger: redis.Redis,
    pool: str,
    until: float,
    *,
    expected: list[str] = HANDED_BACK,
) -> Worker:
    """A bare worker that re-runs what was handed back, waiting for it up to *until*."""
    worker = Worker(
        tmp, url, pool=pool, graceshut=False, name="second", CELERY_TEST_SLEEP_CAP="0.5"
    )
    worker.wait_consuming(ledger)
    while time.monotonic() < until:
        if all(runs(ledger, "finished")[tag] for tag in expected):
            time.sleep(1.5)  # anything run twice would show by now
            break
        time.sleep(0.2)
    worker.stop()
    return worker


@pytest.mark.parametrize(
    ("pool", "how", "flush_fails"),
    [("prefork", "sigterm", False), ("threads", "sigterm", True), ("prefork", "prestop", False),
     ("threads", "prestop", False), ("prefork", "graceshut-run", False)],
)  # fmt: skip
@pytest.mark.usefixtures("secret_dir")
def test_worker_hands_back_what_it_cannot_finish(
    broker: RedisServer, tmp_path: Path, pool: str, how: str, *, flush_fails: bool
) -> None:
    """SIGTERM or preStop: the short task ends, the rest goes back to the queue, exit in time."""
    url = f"redis://127.0.0.1:{broker.port}"
    ledger = redis.Redis.from_url(f"{url}/1")
    store = redis.Redis.from_url(f"{url}/0")
    extra = {"under_run": "1"} if how == "graceshut-run" else {}
    if flush_fails:
        extra["CELERY_TEST_FLUSH_FAILS"] = "1"
    worker = Worker(tmp_path, url, pool=pool, graceshut=True, name="first", **extra)
    try:
        worker.wait_ready()
        sent_at = time.monotonic()
        ids = send_tasks(url)
        wait_started(ledger, {"long", "short"}, worker)
        kubelet = Kubelet(worker)
        code = kubelet.terminate("prestop" if how == "prestop" else "sigterm")
    finally:
        worker.stop()
    output = worker.output()
    assert not kubelet.killed, f"SIGKILLed at the grace period:\n{output}"
    report = json.loads(worker.report.read_text())
    outcomes = {h["name"]: h["outcome"] for h in report["handlers"]}
    assert outcomes["tests.e2e.celery_app.flush"] == ("error" if flush_fails else "ok")
    assert code == (1 if flush_fails else 0), output  # the report's exit status
    assert "WorkerLostError" not in output, output
    if how == "prestop":
        # The route answered with the report: not ok, since the drain ended a task.
        assert kubelet.prestop_status == (0 if report["ok"] else 1), output

    # What the report names: the short task finished, the rest handed back.
    label = {tag: f"work.sleep[{task_id}]" for tag, task_id in ids.items()}
    assert report["tasks"]["finished"] == [label["short"]], report
    assert sorted(report["tasks"]["restored"]) == sorted(label[t] for t in HANDED_BACK), report
    assert report["abandoned"] == [label["long"]], report
    termination = Path(f"{worker.report}.termination").read_text()
    assert "1 finished, 6 restored" in termination, termination

    # The broker has them back before the app's flush ran; nothing stranded.
    assert ledger.lrange("phases", 0, -1) == [b"flush queued=6 unacked=0", b"release"]
    assert store.hlen("unacked") == 0
    assert store.llen("celery") == len(HANDED_BACK)
    assert runs(ledger, "finished") == {"short": 1}

    assert_admin_answers(kubelet)

    again = second_worker(tmp_path, url, ledger, pool, until=sent_at + ETA + 20)
    finished = runs(ledger, "finished")
    assert finished == {"short": 1, **dict.fromkeys(HANDED_BACK, 1)}, again.output()
    assert runs(ledger, "started")["short"] == 1
    print_numbers(f"graceshut, {pool}, {how}", kubelet, store, finished)


@pytest.mark.parametrize("pool", ["prefork", "threads"])
@pytest.mark.usefixtures("secret_dir")
def test_prefetched_tasks_never_start_after_the_trigger(
    broker: RedisServer, tmp_path: Path, pool: str
) -> None:
    """A busy queue: prefetched tasks not started go back to the broker and run once."""
    from celery import Celery

    url = f"redis://127.0.0.1:{broker.port}"
    ledger = redis.Redis.from_url(f"{url}/1")
    store = redis.Redis.from_url(f"{url}/0")
    backlog = [f"b{i}" for i in range(4)]
    worker = Worker(tmp_path, url, pool=pool, graceshut=True, name="first")
    try:
        worker.wait_ready()
        client = Celery("client", broker=f"{url}/0")
        for seconds, tag in [(60, "long"), (3, "short")] + [(3, tag) for tag in backlog]:
            client.send_task("work.sleep", args=(seconds, tag))
        wait_started(ledger, {"long", "short"}, worker)
        kubelet = Kubelet(worker)
        code = kubelet.terminate("sigterm")
    finally:
        worker.stop()
    output = worker.output()
    assert not kubelet.killed, output
    assert code == 0, output
    # The worker had them (prefetched, 4 per process) but started none after the trigger.
    assert runs(ledger, "started") == {"long": 1, "short": 1}, output
    assert store.hlen("unacked") == 0
    assert store.llen("celery") == 1 + len(backlog)
    until = time.monotonic() + 30
    again = second_worker(tmp_path, url, ledger, pool, until, expected=["long", *backlog])
    assert runs(ledger, "finished") == dict.fromkeys(["short", "long", *backlog], 1), again.output()


def assert_admin_answers(kubelet: Kubelet) -> None:
    """Probes alive until the exit and not ready from the trigger on; tasks in /metrics."""
    lively = [status for _, path, status in kubelet.probes if path == "/livez"]
    assert lively, kubelet.probes
    assert set(lively) == {200}, kubelet.probes
    ready = [status for sent, path, status in kubelet.probes if path == "/readyz" and sent > 0.5]
    assert ready, kubelet.probes
    assert set(ready) == {503}, kubelet.probes
    # The running tasks are the work in flight (scraped just after the trigger).
    assert kubelet.metrics is not None
    assert "graceshut_shutting_down 1.0" in kubelet.metrics
    assert "graceshut_in_flight 2.0" in kubelet.metrics, kubelet.metrics


def test_bare_worker_strands_tasks_baseline(broker: RedisServer, tmp_path: Path) -> None:
    """Without graceshut: SIGKILLed at 12 s, the long and the ETA tasks stuck in `unacked`."""
    url = f"redis://127.0.0.1:{broker.port}"
    ledger = redis.Redis.from_url(f"{url}/1")
    store = redis.Redis.from_url(f"{url}/0")
    worker = Worker(tmp_path, url, pool="prefork", graceshut=False, name="first")
    try:
        worker.wait_consuming(ledger)
        sent_at = time.monotonic()
        send_tasks(url)
        wait_started(ledger, {"long", "short"}, worker)
        kubelet = Kubelet(worker)
        kubelet.terminate("sigterm")
    finally:
        worker.stop()
    stranded = store.hlen("unacked")
    second_worker(tmp_path, url, ledger, "prefork", until=sent_at + ETA + 5)
    finished = runs(ledger, "finished")
    print_numbers("bare worker, prefork, sigterm", kubelet, store, finished, stranded)
    assert kubelet.killed
    assert stranded == len(HANDED_BACK)
    assert not any(finished[tag] for tag in HANDED_BACK)


def print_numbers(
    title: str,
    kubelet: Kubelet,
    store: redis.Redis,
    finished: collections.Counter[str],
    stranded: int | None = None,
) -> None:
    """One line of the side-by-side table in docs/celery.md."""
    lost = sum(1 for tag in ["short", *HANDED_BACK] if not finished[tag])
    twice = sum(1 for n in finished.values() if n > 1)
    unacked = store.hlen("unacked") if stranded is None else stranded
    with contextlib.suppress(Exception):
        sys.__stdout__.write(
            f"\n[celery] {title}: exit {kubelet.exit_after:.1f}s after the trigger"
            f"{' (SIGKILL)' if kubelet.killed else ''}, tasks lost {lost}, left in unacked "
            f"{unacked}, run twice {twice}\n"
        )
