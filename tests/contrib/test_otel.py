"""graceshut.contrib.otel in process: the shutdown trace, the metrics, the bounded flush."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from graceshut import Coordinator
from graceshut.contrib.otel import instrument

pytestmark = pytest.mark.anyio


def fast() -> Coordinator:
    return Coordinator(grace_period=3, safety_margin=0.5, propagation_delay=0.05, environ={})


def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_the_shutdown_is_a_trace_timed_as_the_report() -> None:
    """Root, one span per step, handlers under their phase with outcome and error.type."""
    coordinator = fast()
    provider, exporter = traced()

    @coordinator.on_shutdown("announce", timeout=1, name="deregister")
    async def deregister() -> None:
        pass

    @coordinator.on_shutdown("flush", timeout=1, name="save-rows")
    async def save_rows() -> None:
        raise ConnectionError("database is down")

    @coordinator.on_shutdown("release", timeout=0.1, name="unlock")
    async def unlock() -> None:
        await anyio.sleep(1)

    instrument(coordinator, tracer_provider=provider)
    report = await coordinator.shutdown("SIGTERM")

    spans = {s.name: s for s in exporter.get_finished_spans() if s.name != "graceshut.handler"}
    handlers = {
        s.attributes["graceshut.handler"]: s  # type: ignore[index]
        for s in exporter.get_finished_spans()
        if s.name == "graceshut.handler"
    }
    root = spans["graceshut.shutdown"]
    assert root.attributes is not None
    assert dict(root.attributes) == {
        "graceshut.trigger": "SIGTERM",
        "graceshut.grace_period": 3.0,
        "graceshut.deadline": report.started_at + 2.5,
        "graceshut.outcome": "failed",
        "graceshut.exit_status": 1,
        "graceshut.in_flight_at_start": 0,
        "graceshut.in_flight_abandoned": 0,
    }
    assert _seconds(root) == pytest.approx(report.duration, abs=1e-6)
    for step in report.phases:
        span = spans[f"graceshut.{step.name}"]
        assert span.parent is not None
        assert span.parent.span_id == root.context.span_id  # type: ignore[union-attr]
        assert _seconds(span) == pytest.approx(step.duration, abs=1e-6)
    for result in report.handlers:
        span = handlers[result.name]
        assert span.parent is not None
        assert span.parent.span_id == spans[f"graceshut.{result.phase.value}"].context.span_id  # type: ignore[union-attr]
        assert _seconds(span) == pytest.approx(result.duration, abs=1e-6)
    assert handlers["save-rows"].attributes["error.type"] == "ConnectionError"  # type: ignore[index]
    assert handlers["unlock"].attributes["error.type"] == "timeout"  # type: ignore[index]
    assert "error.type" not in handlers["deregister"].attributes  # type: ignore[operator]
    assert [f.outcome for f in report.final_flushes] == ["ok"]


async def test_metrics_are_the_prometheus_numbers_through_the_meter() -> None:
    """The OTel meter reads the same state as contrib.prometheus, final numbers included."""
    coordinator = fast()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    instrument(coordinator, tracer_provider=traced()[0], meter_provider=meters)
    before = _points(reader)
    assert before["graceshut.shutting_down"] == [({}, 0)]
    report = await coordinator.shutdown("SIGTERM")
    after = _points(reader)
    assert after["graceshut.shutting_down"] == [({}, 1)]
    assert after["graceshut.shutdown.ok"] == [({"reason": "SIGTERM"}, 1)]
    assert after["graceshut.shutdown.duration"] == [({"reason": "SIGTERM"}, report.duration)]
    assert {a["phase"] for a, _ in after["graceshut.phase.duration"]} == {
        p.name for p in report.phases
    }


class _HangingExporter(SpanExporter):
    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(30)
        return SpanExportResult.SUCCESS


async def test_a_hanging_export_is_abandoned_and_nothing_hangs_after() -> None:
    """Exporter that never returns: flush abandoned at the deadline; shutdown() is a no-op."""
    coordinator = Coordinator(grace_period=1.0, safety_margin=0.5, propagation_delay=0, environ={})
    exporter = _HangingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    sdk_exit_hook = provider._atexit_handler
    assert sdk_exit_hook is not None
    instrument(coordinator, tracer_provider=provider)
    assert provider._atexit_handler is None, "the SDK's atexit shutdown is off"
    try:
        with anyio.fail_after(5):
            report = await coordinator.shutdown()
        assert [(f.name, f.outcome) for f in report.final_flushes] == [("otel.traces", "abandoned")]
        assert report.exit_code == 0
        with anyio.fail_after(1):
            provider.shutdown()  # the app's own lifespan, later: returns at once
    finally:
        exporter.release.set()
    atexit.unregister(sdk_exit_hook)  # nothing registered: a no-op, as it should be


def _seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None
    assert span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, object], float]]]:
    found: dict[str, list[tuple[dict[str, object], float]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [
                    (dict(p.attributes or {}), p.value)  # type: ignore[union-attr]
                    for p in metric.data.data_points
                ]
    return found


# The SDK's own handler, deprecated for opentelemetry-instrumentation-logging's (same job).
@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
async def test_the_report_line_goes_out_through_the_logger_provider_before_it_shuts_down() -> None:
    """LoggingHandler on graceshut's logger: the report's record is exported, then shut down."""
    import logging

    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter

    coordinator = fast()
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    graceshut_logger = logging.getLogger("graceshut")
    graceshut_logger.addHandler(handler)
    level = graceshut_logger.level
    graceshut_logger.setLevel(logging.INFO)
    try:
        instrument(coordinator, tracer_provider=traced()[0], logger_provider=provider)
        assert provider._at_exit_handler is None
        report = await coordinator.shutdown("SIGTERM")
    finally:
        graceshut_logger.removeHandler(handler)
        graceshut_logger.setLevel(level)
    assert {(f.name, f.outcome) for f in report.final_flushes} == {
        ("otel.traces", "ok"),
        ("otel.logs", "ok"),
    }
    bodies = [str(data.log_record.body) for data in exporter.get_finished_logs()]
    assert report.summary() in bodies
