"""graceshut.contrib.otel's metrics: contrib.prometheus's numbers as OTel observable instruments.

Read when the meter collects (each export, and the final flush after the report), so
nothing is added to the request path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Observation

from .._core._phases import PHASES

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator
    from .._core._report import ShutdownReport


def observe(coordinator: Coordinator, meter: Any) -> None:
    """The numbers of graceshut.contrib.prometheus, read when the meter collects."""

    def gauge(name: str, description: str, read: Callable[[], Iterable[Observation]]) -> None:
        unit = "s" if name.endswith("duration") else "1"
        meter.create_observable_gauge(
            name, callbacks=[_callback(read)], unit=unit, description=description
        )

    def report() -> ShutdownReport | None:
        return coordinator.report

    gauge(
        "graceshut.in_flight",
        "Requests and tracked jobs running now.",
        lambda: [Observation(coordinator.in_flight.count)],
    )
    gauge(
        "graceshut.shutting_down",
        "1 from the first shutdown trigger on, else 0.",
        lambda: [Observation(int(coordinator.shutting_down))],
    )
    gauge(
        "graceshut.phase",
        "1 for the shutdown phase running now.",
        lambda: [Observation(int(p is coordinator.phase), {"phase": p.value}) for p in PHASES],
    )
    meter.create_observable_counter(
        "graceshut.requests_refused",
        callbacks=[_callback(lambda: [Observation(getattr(coordinator.in_flight, "refused", 0))])],
        description="HTTP requests (503) and WebSocket handshakes refused while draining.",
    )
    gauge(
        "graceshut.shutdown.ok",
        "1 when the last shutdown ran every handler successfully and abandoned no work.",
        lambda: [Observation(int(r.ok), {"reason": r.reason}) for r in _some(report())],
    )
    gauge(
        "graceshut.shutdown.duration",
        "Seconds from the first trigger to the end of the last shutdown.",
        lambda: [Observation(r.duration, {"reason": r.reason}) for r in _some(report())],
    )
    gauge(
        "graceshut.shutdown.abandoned",
        "Requests and jobs still running when the drain ran out of time.",
        lambda: [Observation(r.in_flight_abandoned) for r in _some(report())],
    )
    gauge(
        "graceshut.handler.duration",
        "Seconds each shutdown handler took.",
        lambda: [
            Observation(h.duration, {"handler": h.name, "phase": h.phase.value})
            for r in _some(report())
            for h in r.handlers
        ],
    )
    meter.create_observable_counter(
        "graceshut.handler.outcomes",
        callbacks=[
            _callback(
                lambda: [
                    Observation(
                        1, {"handler": h.name, "phase": h.phase.value, "outcome": h.outcome.value}
                    )
                    for r in _some(report())
                    for h in r.handlers
                ]
            )
        ],
        description="Shutdown handlers by outcome (ok, error, timeout, skipped).",
    )
    gauge(
        "graceshut.phase.duration",
        "Seconds each shutdown phase took.",
        lambda: [
            Observation(p.duration, {"phase": p.name}) for r in _some(report()) for p in r.phases
        ],
    )


def _callback(
    read: Callable[[], Iterable[Observation]],
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return list(read())

    return callback


def _some(report: ShutdownReport | None) -> list[ShutdownReport]:
    return [] if report is None else [report]
