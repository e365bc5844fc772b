"""A Starlette app traced by the OpenTelemetry SDK, as a new user sets it up, for the e2e tests.

E2E_OTLP: the collector's base URL (OTLP/HTTP). E2E_OTLP_TIMEOUT: the exporters' timeout
(the SDK's default is 10 s). E2E_GRACESHUT=0: no graceshut at all. E2E_OTEL_INSTRUMENT=0:
graceshut without graceshut.contrib.otel (the SDK flushes at exit, if it gets there).
E2E_OTEL_HANDLERS=1: one handler that succeeds, one that fails, one that times out.
"""

from __future__ import annotations

import os

import anyio
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

COLLECTOR = os.environ.get("E2E_OTLP", "http://127.0.0.1:4318")
TIMEOUT = float(os.environ.get("E2E_OTLP_TIMEOUT", "10"))
GRACESHUT = os.environ.get("E2E_GRACESHUT", "1") == "1"
INSTRUMENT = os.environ.get("E2E_OTEL_INSTRUMENT", "1") == "1"
HANDLERS = os.environ.get("E2E_OTEL_HANDLERS") == "1"

resource = Resource.create({"service.name": "e2e-otel"})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(
    BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{COLLECTOR}/v1/traces", timeout=TIMEOUT))
)
trace.set_tracer_provider(tracer_provider)
reader = PeriodicExportingMetricReader(
    OTLPMetricExporter(endpoint=f"{COLLECTOR}/v1/metrics", timeout=TIMEOUT),
    export_interval_millis=600_000,  # only the final flush exports: what the test reads
)
meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
metrics.set_meter_provider(meter_provider)
tracer = trace.get_tracer("e2e")


async def work(request: Request) -> PlainTextResponse:
    number = request.query_params.get("n", "0")
    with tracer.start_as_current_span("work", attributes={"e2e.n": int(number)}):
        await anyio.sleep(float(request.query_params.get("seconds", "0")))
    return PlainTextResponse(f"done {number}")


async def ready(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ready")


routes = [Route("/work", work)]
if not GRACESHUT:
    routes += [Route("/readyz", ready)]
app = Starlette(routes=routes)

if GRACESHUT:
    import graceshut
    import graceshut.starlette

    coordinator = graceshut.Coordinator()
    graceshut.starlette.install(app, coordinator)
    if HANDLERS:

        @coordinator.on_shutdown("announce", timeout=1, name="deregister")
        async def deregister() -> None:
            pass

        @coordinator.on_shutdown("flush", timeout=1, name="save-rows")
        async def save_rows() -> None:
            raise ConnectionError("database is down: 1200 rows not saved")

        @coordinator.on_shutdown("release", timeout=0.3, name="slow-unlock")
        async def slow_unlock() -> None:
            await anyio.sleep(2)

    if INSTRUMENT:
        from graceshut.contrib.otel import instrument

        instrument(coordinator, tracer_provider=tracer_provider, meter_provider=meter_provider)
