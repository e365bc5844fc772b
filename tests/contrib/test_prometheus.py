from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import anyio
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from graceshut import Coordinator, Phase
from graceshut._core._tracker import InFlight
from graceshut.contrib.prometheus import instrument

from ._http_recorder import Recorder, closed_port_url, serving

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fast() -> Coordinator:
    return Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})


def scrape(registry: CollectorRegistry) -> Samples:
    """The exposition text, parsed: (sample name, labels) -> value."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


@pytest.fixture
def server() -> Iterator[Recorder]:
    with serving() as recorder:
        yield recorder


async def test_outcomes_and_durations_after_a_real_shutdown() -> None:
    """After shutdown() the exposition holds each handler's outcome and duration, and the run's."""
    registry = CollectorRegistry()
    coordinator = fast()
    instrument(coordinator, registry=registry)

    @coordinator.on_shutdown(Phase.FLUSH, timeout=1, name="save-cache")
    async def save() -> None:
        await anyio.sleep(0.1)

    @coordinator.on_shutdown(Phase.RELEASE, timeout=1, name="unlock")
    def unlock() -> None:
        raise RuntimeError("lock server gone")

    @coordinator.on_shutdown(Phase.DRAIN, timeout=0.2, name="consumer")
    async def consumer() -> None:
        await anyio.sleep(5)

    assert ("graceshut_shutdown_ok", frozenset({("reason", "SIGTERM")})) not in scrape(registry)
    report = await coordinator.shutdown("SIGTERM")
    samples = scrape(registry)

    outcome = "graceshut_handler_outcomes_total"
    assert value(samples, outcome, handler="save-cache", phase="flush", outcome="ok") == 1
    assert value(samples, outcome, handler="unlock", phase="release", outcome="error") == 1
    assert value(samples, outcome, handler="consumer", phase="drain", outcome="timeout") == 1
    took = "graceshut_handler_duration_seconds"
    durations = {h.name: h.duration for h in report.handlers}
    saved = value(samples, took, handler="save-cache", phase="flush")
    assert saved == pytest.approx(durations["save-cache"])
    assert saved >= 0.09
    consumed = value(samples, took, handler="consumer", phase="drain")
    assert consumed == pytest.approx(durations["consumer"])
    assert 0.19 <= consumed < 5, "cut at its 0.2 s timeout, not after its 5 s sleep"
    assert value(samples, "graceshut_shutdown_ok", reason="SIGTERM") == 0
    assert value(samples, "graceshut_shutdown_duration_seconds", reason="SIGTERM") == (
        pytest.approx(report.duration)
    )
    assert value(samples, "graceshut_shutdown_abandoned") == 0
    assert value(samples, "graceshut_shutting_down") == 1
    assert all(value(samples, "graceshut_phase", phase=p.value) == 0 for p in Phase)


async def test_live_state_is_visible_while_the_shutdown_runs() -> None:
    """Scraped from a flush handler: shutting_down is 1 and the flush phase is the one set."""
    registry = CollectorRegistry()
    coordinator = fast()
    instrument(coordinator, registry=registry)
    before = scrape(registry)
    seen: list[Samples] = []

    @coordinator.on_shutdown(Phase.FLUSH)
    def look() -> None:
        seen.append(scrape(registry))

    await coordinator.shutdown()

    assert value(before, "graceshut_shutting_down") == 0
    during = seen[0]
    assert value(during, "graceshut_shutting_down") == 1
    assert value(during, "graceshut_phase", phase="flush") == 1
    assert value(during, "graceshut_phase", phase="drain") == 0
    assert ("graceshut_shutdown_ok", frozenset({("reason", "manual")})) not in during


async def test_in_flight_gauge_follows_track() -> None:
    """graceshut_in_flight counts tracked work as it starts and ends, read at scrape time."""
    registry = CollectorRegistry()
    coordinator = fast()
    instrument(coordinator, registry=registry)
    assert value(scrape(registry), "graceshut_in_flight") == 0
    async with coordinator.track("export"):
        assert value(scrape(registry), "graceshut_in_flight") == 1
        async with coordinator.track("stream"):
            assert value(scrape(registry), "graceshut_in_flight") == 2
    assert value(scrape(registry), "graceshut_in_flight") == 0


def test_refused_counter_reads_the_tracker_when_it_counts_refusals() -> None:
    """requests_refused_total is 0 without a counter, then follows in_flight.refused."""
    registry = CollectorRegistry()
    coordinator = fast()
    instrument(coordinator, registry=registry)
    assert value(scrape(registry), "graceshut_requests_refused_total") == 0

    class CountingInFlight(InFlight):
        __slots__ = ("refused",)
        refused: int

    counting = CountingInFlight()
    counting.refused = 7
    coordinator.in_flight = counting
    assert value(scrape(registry), "graceshut_requests_refused_total") == 7


def test_instrument_twice_on_one_registry_keeps_one_set_for_the_latest() -> None:
    """A second instrument() on the same registry does not raise; the newer coordinator wins."""
    registry = CollectorRegistry()
    first, second = fast(), fast()
    instrument(first, registry=registry)
    instrument(second, registry=registry)  # would raise Duplicated timeseries if re-registered
    first.in_flight.enter()

    text = generate_latest(registry).decode()
    assert text.count("# TYPE graceshut_in_flight gauge") == 1
    assert value(scrape(registry), "graceshut_in_flight") == 0  # reads `second`


def test_instrument_twice_on_the_global_registry() -> None:
    """The default (global) registry takes a second call too, and unregister() cleans up."""
    metrics = instrument(fast())
    try:
        again = instrument(fast())
        assert again.registry is REGISTRY
        assert "graceshut_in_flight" in generate_latest(REGISTRY).decode()
    finally:
        metrics.unregister()
        again.unregister()
    assert "graceshut_in_flight" not in generate_latest(REGISTRY).decode()


def test_namespaces_keep_two_coordinators_apart() -> None:
    """Two coordinators on one registry, with their own namespace, both stay exposed."""
    registry = CollectorRegistry()
    a, b = fast(), fast()
    instrument(a, registry=registry, namespace="web")
    instrument(b, registry=registry, namespace="worker")
    b.in_flight.enter()
    samples = scrape(registry)
    assert value(samples, "web_in_flight") == 0
    assert value(samples, "worker_in_flight") == 1


def test_a_foreign_collector_with_the_same_names_is_a_clear_error() -> None:
    """A metric of the user's own named like ours is not removed: the error says what to do."""
    registry = CollectorRegistry()
    Counter("graceshut_requests_refused", "not ours", registry=registry)
    with pytest.raises(ValueError, match="pass namespace= to instrument"):
        instrument(fast(), registry=registry)


def test_unregister_takes_the_metrics_off() -> None:
    """After unregister() the registry no longer exposes graceshut metrics."""
    registry = CollectorRegistry()
    metrics = instrument(fast(), registry=registry)
    metrics.unregister()
    metrics.unregister()  # a second call is harmless
    assert "graceshut_" not in generate_latest(registry).decode()


async def test_phase_durations_come_from_the_report() -> None:
    """graceshut_phase_duration_seconds has one sample per phase the report timed."""
    registry = CollectorRegistry()
    coordinator = fast()
    instrument(coordinator, registry=registry)
    coordinator.add_handler(lambda: time.sleep(0.05), phase=Phase.FLUSH, name="slow")
    await coordinator.shutdown()
    assert value(scrape(registry), "graceshut_phase_duration_seconds", phase="flush") >= 0.05


async def test_final_push_goes_to_the_gateway_before_shutdown_returns(
    server: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With push_gateway, a PUT to /metrics/job/<job>/instance/<pod> carries only our metrics."""
    monkeypatch.setenv("POD_NAME", "web-0")
    registry = CollectorRegistry()
    Counter("app_orders", "the app's own metric", registry=registry).inc()
    coordinator = fast()
    instrument(coordinator, registry=registry, push_gateway=server.url, job="shop")

    @coordinator.on_shutdown(Phase.FLUSH, name="save")
    def save() -> None:
        pass

    await coordinator.shutdown("SIGTERM")

    [push] = server.received
    assert (push.method, push.path) == ("PUT", "/metrics/job/shop/instance/web-0")
    body = push.body.decode()
    assert 'graceshut_handler_outcomes_total{handler="save",outcome="ok",phase="flush"} 1.0' in (
        body
    )
    assert 'graceshut_shutdown_ok{reason="SIGTERM"} 1.0' in body
    assert "app_orders" not in body


async def test_push_uses_the_grouping_key_given(server: Recorder) -> None:
    """grouping_key replaces the default instance label in the push URL."""
    coordinator = fast()
    instrument(
        coordinator,
        registry=CollectorRegistry(),
        push_gateway=server.url,
        grouping_key={"instance": "a", "zone": "z1"},
    )
    await coordinator.shutdown()
    assert server.received[0].path == "/metrics/job/graceshut/instance/a/zone/z1"


async def test_a_failed_push_is_logged_and_does_not_fail_the_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pushgateway down: a warning with the error; the report is still ok and comes quickly."""
    coordinator = fast()
    instrument(
        coordinator, registry=CollectorRegistry(), push_gateway=closed_port_url(), push_timeout=5
    )
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="graceshut"):
        report = await coordinator.shutdown()
    assert report.ok
    assert time.monotonic() - started < 5, "a refused push is not waited out to push_timeout"
    [record] = [r for r in caplog.records if "metrics push" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.__dict__["outcome"] == "error"
    assert "failed" in record.getMessage()


async def test_a_hanging_gateway_is_cut_off_at_push_timeout(server: Recorder) -> None:
    """A Pushgateway that never answers delays shutdown() by about push_timeout, no more."""
    server.hang = True
    coordinator = fast()
    instrument(coordinator, registry=CollectorRegistry(), push_gateway=server.url, push_timeout=0.3)
    started = time.monotonic()
    report = await coordinator.shutdown()
    elapsed = time.monotonic() - started
    assert report.ok
    assert 0.25 <= elapsed < 3, "cut at its 0.3 s push_timeout, not at the 9 s budget's end"
    assert len(server.received) == 1
