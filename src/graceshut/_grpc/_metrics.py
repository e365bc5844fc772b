"""Prometheus metrics of a gRPC server's calls, read from its `CallTracker` at scrape time.

- ``graceshut_grpc_calls_in_flight``: calls of async handlers running now.
- ``graceshut_grpc_calls_total{method,outcome}``: calls ended, by outcome: ``ok``,
  ``error`` (the handler failed or aborted the call, or the client cancelled it) or
  ``cut`` (ended by graceshut at the drain's deadline).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ._calls import CallTracker

logger = logging.getLogger("graceshut")

_registered: set[tuple[int, int]] = set()


class _CallCollector:
    def __init__(self, tracker: CallTracker) -> None:
        self._tracker = tracker

    def collect(self) -> Iterator[Metric]:
        tracker = self._tracker
        yield GaugeMetricFamily(
            "graceshut_grpc_calls_in_flight",
            "gRPC calls of async handlers running now",
            value=tracker.in_flight,
        )
        calls = CounterMetricFamily(
            "graceshut_grpc_calls",
            "gRPC calls ended, by method and outcome (ok, error, cut)",
            labels=["method", "outcome"],
        )
        for (method, outcome), count in sorted(tracker.outcomes.items()):
            calls.add_metric([method, outcome], count)
        yield calls


def register(tracker: CallTracker, registry: Any = None) -> None:
    """Expose *tracker*'s calls on *registry* (default the global one), once."""
    registry = REGISTRY if registry is None else registry
    key = (id(tracker), id(registry))
    if key in _registered:
        return
    try:
        registry.register(_CallCollector(tracker))
    except ValueError as exc:  # another server's counters hold the names on it
        logger.warning("gRPC call metrics not registered: %s", exc)
        return
    _registered.add(key)
