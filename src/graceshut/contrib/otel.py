"""OpenTelemetry: the SDK flushed inside the grace period, and the shutdown as a trace.

Install with ``pip install 'graceshut[otel]'`` (opentelemetry-sdk). One call::

    from graceshut.contrib.otel import instrument

    instrument(coordinator)  # the global providers; or tracer_provider=..., meter_provider=...

What it does:

- **Flushes in time.** The SDK flushes at interpreter exit (``shutdown_on_exit``), which
  a SIGTERM'd uvicorn never reaches (0 of 50 spans arrived), and its ``shutdown()``
  joins the export thread with no timeout (with a collector that never answers, exit
  came 30.9 s after SIGTERM, past a 6 s grace period). Here each provider is
  force-flushed and shut down as the sequence's last step, after the report, on a daemon
  thread bounded by the deadline (`Coordinator.on_final_flush`): one that does not
  finish is abandoned and reported (``final_flushes`` in the report), never waited for.
  The SDK's own exit-time shutdown is unregistered, and a provider's ``shutdown()``
  becomes a no-op once graceshut's has begun, so nothing can hang on it at exit.
- **The shutdown as a trace**: a root span ``graceshut.shutdown``, a child span per step
  (``graceshut.announce``, ``graceshut.propagation``, ``graceshut.drain``...) and, under
  its phase, one span ``graceshut.handler`` per handler, timed as the report says;
  exported before the tracer provider shuts down.
- **Metrics**: the numbers of `graceshut.contrib.prometheus` as observable instruments
  (``graceshut.in_flight``, ``graceshut.phase``, ``graceshut.handler.outcomes``...),
  for apps that export metrics over OTLP; their Prometheus names are the same.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._core._report import Outcome

try:
    from opentelemetry import metrics as metrics_api
    from opentelemetry import trace as trace_api
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "graceshut.contrib.otel needs opentelemetry-sdk: pip install 'graceshut[otel]'"
    ) from exc

from ._otel_metrics import observe

if TYPE_CHECKING:
    from .._core._config import Settings
    from .._core._coordinator import Coordinator
    from .._core._registry import Unsubscribe
    from .._core._report import HandlerResult, ShutdownReport

__all__ = ["OtelShutdown", "instrument", "record_shutdown_trace"]

logger = logging.getLogger("graceshut")

_NS = 1_000_000_000


class OtelShutdown:
    """What `instrument` set up: the providers it flushes, and a way to undo it.

    Attributes:
        coordinator: The coordinator observed.
        tracer_provider: The SDK tracer provider flushed after the report, or None.
        meter_provider: The SDK meter provider, or None.
        logger_provider: The SDK logger provider, or None.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        tracer_provider: Any,
        meter_provider: Any,
        logger_provider: Any,
    ) -> None:
        self.coordinator = coordinator
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.logger_provider = logger_provider
        self._unsubscribe: list[Unsubscribe] = []

    def uninstrument(self) -> None:
        """Stop flushing at shutdown (the instruments stay on their meter)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _flush_traces(self, report: ShutdownReport, timeout: float) -> None:
        provider = self.tracer_provider
        record_shutdown_trace(provider.get_tracer("graceshut"), report, self.coordinator.settings)
        _flush_and_shut_down(provider, timeout)

    def _flush_metrics(self, report: ShutdownReport, timeout: float) -> None:
        _flush_and_shut_down(self.meter_provider, timeout)

    def _flush_logs(self, report: ShutdownReport, timeout: float) -> None:
        _flush_and_shut_down(self.logger_provider, timeout)


def instrument(
    coordinator: Coordinator,
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    logger_provider: Any = None,
) -> OtelShutdown:
    """Flush OpenTelemetry inside the grace period and record the shutdown as a trace.

    Args:
        coordinator: The coordinator whose shutdown to record.
        tracer_provider: An SDK ``TracerProvider``; default: the global one.
        meter_provider: An SDK ``MeterProvider``; default: the global one.
        logger_provider: An SDK ``LoggerProvider``; default: the global one.

    A provider that is not the SDK's (the API's no-op or proxy one, when nothing was
    configured) is left alone, with a ``DEBUG`` line.

    Returns:
        The `OtelShutdown`.

    Example::

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        instrument(coordinator, tracer_provider=provider)
    """
    tracers = _sdk(tracer_provider or trace_api.get_tracer_provider(), "tracer")
    meters = _sdk(meter_provider or metrics_api.get_meter_provider(), "meter")
    loggers = _sdk(logger_provider or _global_logger_provider(), "logger")
    setup = OtelShutdown(coordinator, tracers, meters, loggers)
    if meters is not None:
        observe(coordinator, meters.get_meter("graceshut"))
    flushes: list[tuple[str, Any, Callable[[ShutdownReport, float], None]]] = [
        ("otel.traces", tracers, setup._flush_traces),  # noqa: SLF001 - same module
        ("otel.metrics", meters, setup._flush_metrics),  # noqa: SLF001
        ("otel.logs", loggers, setup._flush_logs),  # noqa: SLF001
    ]
    for name, provider, flush in flushes:
        if provider is not None:
            _no_exit_time_shutdown(provider)
            setup._unsubscribe.append(coordinator.on_final_flush(name, flush))  # noqa: SLF001
    return setup


def record_shutdown_trace(tracer: Any, report: ShutdownReport, settings: Settings) -> None:
    """Emit *report* as a trace: root span, one per step, one per handler under its phase.

    Span times come from the report (its start and each step's offset and duration), so
    durations in the trace are the report's. The root's ``graceshut.deadline`` is the
    sequence's deadline in seconds since the epoch (trigger + grace period - safety
    margin).
    """
    start = int(report.started_at * _NS)
    root = tracer.start_span(
        "graceshut.shutdown",
        context=Context(),  # a trace of its own, whatever span is current here
        kind=SpanKind.INTERNAL,
        start_time=start,
        attributes={
            "graceshut.trigger": report.reason,
            "graceshut.grace_period": settings.grace_period,
            "graceshut.deadline": report.started_at + settings.budget,
            "graceshut.outcome": "ok" if report.ok else "failed",
            "graceshut.exit_status": report.exit_code,
            "graceshut.in_flight_at_start": report.in_flight_at_start,
            "graceshut.in_flight_abandoned": report.in_flight_abandoned,
        },
    )
    parent = trace_api.set_span_in_context(root)
    placed: set[int] = set()
    for step in report.phases:
        step_start = start + int(step.started * _NS)
        span = tracer.start_span(f"graceshut.{step.name}", context=parent, start_time=step_start)
        inside = trace_api.set_span_in_context(span)
        for index, result in enumerate(report.handlers):
            if result.phase.value == step.name and index not in placed:
                placed.add(index)
                _handler_span(tracer, result, inside, step_start)
        span.end(end_time=step_start + int(step.duration * _NS))
    for index, result in enumerate(report.handlers):
        if index not in placed:  # its phase never ran (the run was cut short)
            _handler_span(tracer, result, parent, start + int(report.duration * _NS))
    if not report.ok:
        root.set_status(Status(StatusCode.ERROR, report.summary()))
    root.end(end_time=start + int(report.duration * _NS))


def _handler_span(tracer: Any, result: HandlerResult, parent: Any, start: int) -> None:
    attributes: dict[str, Any] = {
        "graceshut.handler": result.name,
        "graceshut.phase": result.phase.value,
        "graceshut.outcome": result.outcome.value,
    }
    if result.outcome is Outcome.TIMEOUT:
        attributes["error.type"] = "timeout"
    elif result.outcome is Outcome.ERROR:
        attributes["error.type"] = (result.error or "error").split(":", 1)[0]
    if result.fallback is not None:
        attributes["graceshut.fallback"] = result.fallback.name
        attributes["graceshut.fallback.outcome"] = result.fallback.outcome.value
    span = tracer.start_span(
        "graceshut.handler", context=parent, start_time=start, attributes=attributes
    )
    if result.outcome in (Outcome.ERROR, Outcome.TIMEOUT):
        span.set_status(Status(StatusCode.ERROR, result.error or result.outcome.value))
    span.end(end_time=start + int(result.duration * _NS))


def _sdk(provider: Any, kind: str) -> Any:
    """*provider* if it is an SDK provider (it can flush), else None."""
    if callable(getattr(provider, "force_flush", None)) and callable(
        getattr(provider, "shutdown", None)
    ):
        return provider
    logger.debug(
        "OpenTelemetry %s provider %s is not the SDK's: not flushed at shutdown",
        kind,
        type(provider).__name__,
    )
    return None


def _global_logger_provider() -> Any:
    try:
        from opentelemetry._logs import get_logger_provider  # noqa: PLC0415 - still "_logs"
    except ImportError:  # pragma: no cover - an API without logs
        return None
    return get_logger_provider()


def _no_exit_time_shutdown(provider: Any) -> None:
    """Take the SDK's ``atexit`` shutdown (``shutdown_on_exit``) off: graceshut's replaces it."""
    for attribute in ("_atexit_handler", "_at_exit_handler"):
        handler = getattr(provider, attribute, None)
        if callable(handler):
            atexit.unregister(handler)
            setattr(provider, attribute, None)


def _flush_and_shut_down(provider: Any, timeout: float) -> None:
    """Flush then shut down *provider*; its ``shutdown`` is a no-op for everyone else after."""
    real_shutdown = provider.shutdown
    # First: the app's lifespan, or an exit hook, calling shutdown() while ours hangs
    # on a collector must not hang with it.
    provider.shutdown = _already_shut_down
    try:
        provider.force_flush(max(1, int(timeout * 1000)))
    finally:
        real_shutdown()


def _already_shut_down(*args: Any, **kwargs: Any) -> None:
    """A provider's ``shutdown`` once graceshut's has begun: nothing to do."""
