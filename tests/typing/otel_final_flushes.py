"""Type-checked only: OpenTelemetry and final flushes as users write them."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

import graceshut
from graceshut.contrib.otel import OtelShutdown, instrument

coordinator = graceshut.Coordinator()

setup: OtelShutdown = instrument(coordinator)
instrument(coordinator, tracer_provider=TracerProvider(), meter_provider=MeterProvider())
setup.uninstrument()


def flush_errors(report: graceshut.ShutdownReport, timeout: float) -> None:
    """An error reporter's flush, bounded by what is left."""


unsubscribe = coordinator.on_final_flush("errors", flush_errors)
unsubscribe()


async def check() -> None:
    report = await coordinator.shutdown()
    results: tuple[graceshut.FinalFlushResult, ...] = report.final_flushes
    abandoned = [r.name for r in results if r.outcome == "abandoned"]
    print(abandoned, report.to_dict()["final_flushes"])
