"""``/metrics`` for the admin listener: Prometheus' text format, when it is installed."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def prometheus_metrics(registry: Any = None) -> Callable[[], tuple[bytes, str]] | None:
    """``/metrics`` from prometheus-client, or None when it is not installed.

    *registry* defaults to prometheus-client's global one, or with
    ``PROMETHEUS_MULTIPROC_DIR`` set, every worker's metrics through its multiprocess
    collector.
    """
    try:
        import prometheus_client  # noqa: PLC0415 - optional
        from prometheus_client import multiprocess  # noqa: PLC0415
    except ImportError:
        return None
    if registry is None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = prometheus_client.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = prometheus_client.REGISTRY

    def render() -> tuple[bytes, str]:
        return prometheus_client.generate_latest(registry), prometheus_client.CONTENT_TYPE_LATEST

    return render
