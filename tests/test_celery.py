"""graceshut.celery without a worker: settings, budget, wiring; the report's tasks.

The worker itself, on a real broker with real signals, is in ``tests/e2e/test_celery.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from celery import Celery, signals

import graceshut
import graceshut.celery
from graceshut._celery._loop import WorkerLoop
from graceshut._http._admin import AdminListener
from graceshut._http._shutdown_route import ShutdownEndpoint
from graceshut._http._wsgi_runtime import runtimes
from graceshut.cli._run import default_url

from .asgi_servers import free_port


@pytest.fixture
def app() -> Iterator[Celery]:
    """A Celery app; the signal receivers that install() connects are taken off after."""
    before = {
        signal: list(signal.receivers or [])
        for signal in (signals.worker_init, signals.worker_ready)
    }
    yield Celery("tests", broker="memory://", set_as_current=False)
    for signal, receivers in before.items():
        signal.receivers = receivers
        signal.sender_receivers_cache.clear()


class Sender:
    """What Celery sends worker_init from: something with the app."""

    def __init__(self, app: Celery) -> None:
        self.app = app


def test_a_worker_gets_no_propagation_delay_and_room_for_celerys_exit(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default no delay (no Service routes to a worker) and 3 s kept for Celery's own stop."""
    for name in ("GRACESHUT_PROPAGATION_DELAY", "GRACESHUT_SAFETY_MARGIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GRACESHUT_GRACE_PERIOD", "12")
    coordinator = graceshut.celery.install(app)
    assert coordinator.settings.propagation_delay == 0
    assert coordinator.settings.safety_margin == graceshut.celery.DEFAULT_SAFETY_MARGIN
    assert [h.name for h in coordinator.handlers] == ["celery.stop-consuming"]
    assert not coordinator.shutting_down  # nothing starts outside a worker


def test_the_environment_still_sets_the_delay_and_a_given_coordinator_is_kept(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GRACESHUT_PROPAGATION_DELAY turns the delay on; a coordinator passed in is the one used."""
    monkeypatch.setenv("GRACESHUT_PROPAGATION_DELAY", "2.5")
    assert graceshut.celery.install(app).settings.propagation_delay == 2.5
    mine = graceshut.Coordinator(grace_period=20)
    assert graceshut.celery.install(app, mine) is mine


def test_bad_settings_name_their_source(app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad liveness timeout or admin address is a ConfigError naming the variable or argument."""
    monkeypatch.setenv("GRACESHUT_CELERY_LIVENESS_TIMEOUT", "soon")
    with pytest.raises(graceshut.ConfigError, match="GRACESHUT_CELERY_LIVENESS_TIMEOUT"):
        graceshut.celery.install(app)
    with pytest.raises(graceshut.ConfigError, match="liveness_timeout"):
        graceshut.celery.install(app, liveness_timeout=0)
    monkeypatch.delenv("GRACESHUT_CELERY_LIVENESS_TIMEOUT")
    with pytest.raises(graceshut.ConfigError, match="admin_address"):
        graceshut.celery.install(app, admin_address="nowhere")


def test_celerys_soft_shutdown_gets_the_drains_share_of_the_budget() -> None:
    """worker_soft_shutdown_timeout = budget - delay - what flush, release and report keep."""
    coordinator = graceshut.Coordinator(grace_period=30, safety_margin=3, propagation_delay=1)
    coordinator.add_handler(lambda: None, phase="flush", timeout=4, name="a")
    coordinator.add_handler(lambda: None, phase="flush", timeout=2, name="b")
    coordinator.add_handler(lambda: None, phase="release", timeout=1.5, name="c")
    assert graceshut.celery.worker_settings(coordinator) == {
        "worker_soft_shutdown_timeout": 30 - 3 - 1 - 4 - 1.5,
        "worker_enable_soft_shutdown_on_idle": True,
    }


def test_worker_init_sets_celerys_settings_for_this_app_only(app: Celery) -> None:
    """Celery's signals are process-wide: another app's worker_init leaves this app alone."""
    coordinator = graceshut.celery.install(app, graceshut.Coordinator(grace_period=12))
    other = Celery("other", broker="memory://", set_as_current=False)
    signals.worker_init.send(sender=Sender(other))
    assert app.conf.worker_soft_shutdown_timeout == 0.0  # Celery's default: off
    signals.worker_init.send(sender=Sender(app))
    assert app.conf.worker_soft_shutdown_timeout == coordinator.settings.budget - 5
    assert app.conf.worker_enable_soft_shutdown_on_idle is True


@pytest.mark.anyio
async def test_the_report_names_the_tasks_by_outcome() -> None:
    """Tasks noted during the run land in report.tasks, to_dict() and the summary line."""
    coordinator = graceshut.Coordinator(grace_period=5, propagation_delay=0)
    coordinator.note_task("finished", "work.short[a1]")
    coordinator.note_task("restored", "work.long[b2]")
    coordinator.note_task("restored", "work.eta[c3]")
    report = await coordinator.shutdown("test")
    assert report.tasks == {
        "finished": ("work.short[a1]",),
        "restored": ("work.long[b2]", "work.eta[c3]"),
    }
    assert report.to_dict()["tasks"]["restored"] == ["work.long[b2]", "work.eta[c3]"]
    assert report.summary().endswith("; tasks: 1 finished, 2 restored")
    web = graceshut.Coordinator(grace_period=5, propagation_delay=0)
    assert "tasks" not in (await web.shutdown()).summary()


def test_the_admin_listener_answers_a_workers_own_probes() -> None:
    """Probes given to the listener replace the coordinator's answers; the route stays."""
    coordinator = graceshut.Coordinator(grace_period=5)
    port = free_port()
    listener = AdminListener(
        coordinator,
        ShutdownEndpoint(coordinator, token="t0ken"),
        ("127.0.0.1", port),
        probes={"/readyz": lambda: (503, {"status": "not consuming"}), "/livez": lambda: (200, {})},
    )
    assert listener._try_bind()  # bind without a loop thread: no /shutdown call here
    try:
        answer = listener.answer("GET", "/readyz", [], None)
        assert answer[0] == 503
        assert b"not consuming" in answer[1]
        assert listener.answer("GET", "/livez", [], None)[0] == 200
        assert listener.answer("GET", "/shutdown", [], None)[0] == 401
    finally:
        listener.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1)


def test_graceshut_run_finds_the_admin_listeners_route() -> None:
    """With GRACESHUT_ADMIN_ADDRESS set, `graceshut run` calls it (a worker has no PORT)."""
    assert default_url({"GRACESHUT_ADMIN_ADDRESS": "9901"}) == "http://127.0.0.1:9901/shutdown"
    assert default_url({"GRACESHUT_ADMIN_ADDRESS": "10.0.0.5:9901", "PORT": "8000"}) == (
        "http://10.0.0.5:9901/shutdown"
    )
    assert default_url({"GRACESHUT_ADMIN_ADDRESS": "[::]:9901"}) == "http://[::1]:9901/shutdown"
    assert default_url({"GRACESHUT_ADMIN_ADDRESS": "unix:/run/a.sock", "PORT": "8080"}) == (
        "http://127.0.0.1:8080/shutdown"
    )
    with pytest.raises(graceshut.ConfigError, match="GRACESHUT_ADMIN_ADDRESS"):
        default_url({"GRACESHUT_ADMIN_ADDRESS": "nope"})


class ConsumerState:
    """What the probes read of Celery's consumer: its connection and task consumer."""

    def __init__(self) -> None:
        self.connection: object | None = object()
        self.task_consumer: object | None = object()


def test_probes_follow_the_loops_heartbeat_and_the_consumer_never_the_broker() -> None:
    """Alive while the loop beats or waits for the broker; ready only while consuming."""
    coordinator = graceshut.Coordinator(grace_period=5)
    bridge = WorkerLoop(coordinator, liveness_timeout=10)
    assert bridge.liveness()[0] == 200  # the consumer is not ready yet: not for liveness
    assert bridge.readiness() == (503, {"status": "not consuming"})
    consumer = ConsumerState()
    bridge.consumer = consumer
    bridge.last_beat = time.monotonic()
    assert bridge.readiness() == (200, {"status": "ready"})
    assert bridge.liveness()[0] == 200
    bridge.last_beat -= 11  # the loop has not beaten for longer than the timeout
    status, body = bridge.liveness()
    assert (status, body["status"]) == (503, "stuck")
    consumer.connection = None  # reconnecting to the broker
    assert bridge.liveness()[0] == 200
    assert bridge.readiness() == (503, {"status": "not consuming"})


@pytest.mark.anyio
async def test_a_process_that_only_sends_tasks_runs_none_of_the_workers_machinery(
    app: Celery,
) -> None:
    """A web process importing the app: its shutdown runs clean, no thread, no exit watchdog."""
    coordinator = graceshut.Coordinator(grace_period=5, propagation_delay=0)
    graceshut.celery.install(app, coordinator)
    report = await coordinator.shutdown("test")
    assert [(h.name, h.outcome) for h in report.handlers] == [
        ("celery.stop-consuming", graceshut.Outcome.OK)
    ]
    assert report.exit_code == 0
    assert report.tasks == {}
    assert not [r for r in runtimes() if r.coordinator is coordinator]


@pytest.mark.anyio
async def test_prometheus_counts_the_tasks_by_outcome() -> None:
    """graceshut_shutdown_tasks{outcome} once the run is over."""
    from prometheus_client import CollectorRegistry, generate_latest

    from graceshut.contrib.prometheus import instrument

    coordinator = graceshut.Coordinator(grace_period=5, propagation_delay=0)
    registry = CollectorRegistry()
    instrument(coordinator, registry=registry)
    coordinator.note_task("restored", "work.long[b2]")
    coordinator.note_task("restored", "work.eta[c3]")
    coordinator.note_task("cancelled", "work.early[d4]")
    await coordinator.shutdown("test")
    text = generate_latest(registry).decode()
    assert 'graceshut_shutdown_tasks{outcome="restored"} 2.0' in text
    assert 'graceshut_shutdown_tasks{outcome="cancelled"} 1.0' in text
