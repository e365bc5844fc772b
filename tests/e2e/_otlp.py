"""A real OTLP/HTTP collector for the tests: the recording server, payloads decoded.

The server is `tests.contrib._http_recorder`'s (answers 200, or hangs, on 127.0.0.1); this
decodes what the SDK's OTLP/HTTP exporters posted with ``opentelemetry-proto``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..contrib._http_recorder import Recorder


@dataclasses.dataclass(frozen=True)
class Span:
    name: str
    span_id: bytes
    parent_id: bytes
    trace_id: bytes
    start: int
    end: int
    attributes: dict[str, Any]
    status_code: int

    @property
    def duration(self) -> float:
        return (self.end - self.start) / 1e9


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def spans(recorder: Recorder) -> list[Span]:
    """Every span posted to ``/v1/traces`` so far."""
    found = []
    for received in list(recorder.received):
        if received.path != "/v1/traces":
            continue
        request = ExportTraceServiceRequest()
        request.ParseFromString(received.body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    found.append(
                        Span(
                            span.name,
                            span.span_id,
                            span.parent_span_id,
                            span.trace_id,
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                            attributes,
                            span.status.code,
                        )
                    )
    return found


def metric_points(recorder: Recorder) -> dict[str, list[tuple[dict[str, Any], float]]]:
    """Every metric posted to ``/v1/metrics``: name -> [(attributes, value)]."""
    found: dict[str, list[tuple[dict[str, Any], float]]] = {}
    for received in list(recorder.received):
        if received.path != "/v1/metrics":
            continue
        request = ExportMetricsServiceRequest()
        request.ParseFromString(received.body)
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    data = getattr(metric, metric.WhichOneof("data"))
                    points = found.setdefault(metric.name, [])
                    for point in data.data_points:
                        attributes = {a.key: _value(a.value) for a in point.attributes}
                        number = point.WhichOneof("value")
                        points.append((attributes, float(getattr(point, number))))
    return found
