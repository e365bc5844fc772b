"""Prometheus metrics for the shutdown: in-flight work, progress, handler outcomes.

Install with ``pip install 'graceshut[prometheus]'``. `instrument` registers one
collector that reads the coordinator when it is scraped: nothing is added to the
request path. It can push the final numbers to a Pushgateway, since a process that is
going away is seldom scraped after its last handler::

    from graceshut.contrib.prometheus import instrument

    instrument(coordinator)  # on prometheus_client's global registry
    prometheus_client.start_http_server(9102)  # a port of its own: see the docs

Metrics (with the default ``namespace="graceshut"``):

- ``graceshut_in_flight``: requests and tracked jobs running now.
- ``graceshut_shutting_down``: 1 from the first shutdown trigger on.
- ``graceshut_phase{phase}``: 1 for the phase running now.
- ``graceshut_requests_refused_total``: requests (503) and WebSocket handshakes
  refused while draining.
- ``graceshut_shutdown_ok{reason}``, ``graceshut_shutdown_duration_seconds{reason}``,
  ``graceshut_shutdown_abandoned``: once the run is over.
- ``graceshut_handler_duration_seconds{handler,phase}``,
  ``graceshut_handler_outcomes_total{handler,phase,outcome}``: once the run is over.
- ``graceshut_phase_duration_seconds{phase}``: once the run is over, where the report
  has phase timings.
- ``graceshut_shutdown_tasks{outcome}``: once the run is over, a task worker's tasks by
  outcome (``finished``, ``restored``, ``cancelled``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .._core._phases import PHASES
from .._core._pod import pod_name

try:
    from prometheus_client import REGISTRY, CollectorRegistry, push_to_gateway
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "graceshut.contrib.prometheus needs prometheus-client: pip install 'graceshut[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .._core._coordinator import Coordinator
    from .._core._report import ShutdownReport

__all__ = ["ShutdownMetrics", "instrument"]

logger = logging.getLogger("graceshut")


class ShutdownMetrics:
    """What `instrument` set up: a collector on a registry, and the optional push.

    Attributes:
        coordinator: The coordinator whose state is exposed.
        registry: The registry the collector is registered on.
        namespace: The prefix of every metric name.
        push_gateway: Where the final push goes, or None.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        registry: CollectorRegistry,
        namespace: str,
        *,
        push_gateway: str | None,
        job: str,
        grouping_key: Mapping[str, str] | None,
        push_timeout: float,
    ) -> None:
        self.coordinator = coordinator
        self.registry = registry
        self.namespace = namespace
        self.push_gateway = push_gateway
        self._job = job
        self._grouping_key = dict(grouping_key) if grouping_key is not None else None
        self._push_timeout = push_timeout
        self._collector = _ShutdownCollector(coordinator, namespace)

    def collect(self) -> Iterator[Metric]:
        """The metric families as of now (what a scrape returns)."""
        return self._collector.collect()

    def unregister(self) -> None:
        """Take the metrics off the registry (and stop the final push).

        Example::

            metrics = instrument(coordinator, registry=registry)
            ...
            metrics.unregister()
        """
        self.push_gateway = None
        # KeyError: already replaced by a later instrument() on this registry.
        with contextlib.suppress(KeyError):
            self.registry.unregister(self._collector)

    def push(self, timeout: float | None = None) -> None:
        """Push the graceshut metrics (and nothing else) to the Pushgateway now.

        They replace the group ``job`` + grouping key (by default ``instance`` = the pod
        name), so each pod keeps the numbers of its last shutdown.

        Raises:
            RuntimeError: No ``push_gateway`` was configured.
            OSError: The Pushgateway could not be reached or refused the push.
        """
        if self.push_gateway is None:
            raise RuntimeError("no push_gateway configured: pass push_gateway= to instrument()")
        only_ours = CollectorRegistry(auto_describe=False)
        only_ours.register(self._collector)
        push_to_gateway(
            self.push_gateway,
            job=self._job,
            registry=only_ours,
            grouping_key=(
                self._grouping_key if self._grouping_key is not None else {"instance": pod_name()}
            ),
            timeout=self._push_timeout if timeout is None else timeout,
        )

    def _push_final(self, report: ShutdownReport) -> None:
        """Report listener: push once the run is over, within what is left of the budget."""
        if self.push_gateway is None:
            return
        left = self.coordinator.settings.budget - report.duration
        timeout = min(self._push_timeout, left)
        fields: dict[str, Any] = {"phase": "report", "push_gateway": self.push_gateway}
        if timeout <= 0:
            logger.warning(
                "metrics not pushed to %s: no time left before the deadline",
                self.push_gateway,
                extra={**fields, "outcome": "skipped", "remaining": max(0.0, left)},
            )
            return
        started = time.monotonic()
        try:
            self.push(timeout)
        except Exception as exc:
            duration = time.monotonic() - started
            logger.warning(
                "metrics push to %s failed after %.3fs: %s: %s",
                self.push_gateway,
                duration,
                type(exc).__name__,
                exc,
                extra={**fields, "outcome": "error", "duration": duration},
            )
            return
        duration = time.monotonic() - started
        logger.info(
            "metrics pushed to %s in %.3fs",
            self.push_gateway,
            duration,
            extra={**fields, "outcome": "ok", "duration": duration},
        )


def instrument(
    coordinator: Coordinator,
    *,
    registry: CollectorRegistry | None = None,
    namespace: str = "graceshut",
    push_gateway: str | None = None,
    job: str = "graceshut",
    grouping_key: Mapping[str, str] | None = None,
    push_timeout: float = 2.0,
) -> ShutdownMetrics:
    """Expose *coordinator*'s shutdown as Prometheus metrics on *registry*.

    Safe to call again on the same registry (tests, reloads): the metrics of an earlier
    call with the same *namespace* are taken off first, so the latest coordinator wins.

    Args:
        coordinator: The coordinator to observe.
        registry: Where to register; prometheus_client's global ``REGISTRY`` by default.
        namespace: Prefix of the metric names; a second coordinator on one registry
            needs its own.
        push_gateway: Pushgateway address (``"http://pushgateway:9091"``): when set, the
            final numbers are pushed once the run is over, before `shutdown` returns.
        job: The Pushgateway ``job``.
        grouping_key: The rest of the Pushgateway group; default
            ``{"instance": <pod name>}`` (``POD_NAME``, else ``HOSTNAME``).
        push_timeout: Seconds the push may take, and never more than what is left of
            the shutdown budget.

    Returns:
        The `ShutdownMetrics`, to `~ShutdownMetrics.unregister` or push by hand.

    Raises:
        ValueError: Another collector (not graceshut's) already has these metric names.

    Example::

        registry = prometheus_client.CollectorRegistry()
        instrument(coordinator, registry=registry, push_gateway="http://pushgateway:9091")
    """
    target = REGISTRY if registry is None else registry
    metrics = ShutdownMetrics(
        coordinator,
        target,
        namespace,
        push_gateway=push_gateway,
        job=job,
        grouping_key=grouping_key,
        push_timeout=push_timeout,
    )
    _replace(target, metrics._collector)  # noqa: SLF001 - same module
    coordinator.on_report(metrics._push_final)  # noqa: SLF001
    return metrics


class _ShutdownCollector:
    """Reads the coordinator at scrape time; registered once per registry and namespace."""

    def __init__(self, coordinator: Coordinator, namespace: str) -> None:
        self.coordinator = coordinator
        # Marks the collector as graceshut's even across a reload of this module.
        self.graceshut_namespace = namespace
        self._ns = namespace

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples: the registry checks names with them."""
        return self._families(with_samples=False)

    def collect(self) -> Iterator[Metric]:
        """The metric families with their current values."""
        return self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        ns = self._ns
        coordinator = self.coordinator
        report = coordinator.report if with_samples else None

        in_flight = GaugeMetricFamily(f"{ns}_in_flight", "Requests and tracked jobs running now.")
        shutting_down = GaugeMetricFamily(
            f"{ns}_shutting_down", "1 from the first shutdown trigger on, else 0."
        )
        phase = GaugeMetricFamily(
            f"{ns}_phase", "1 for the shutdown phase running now.", labels=["phase"]
        )
        refused = CounterMetricFamily(
            f"{ns}_requests_refused",
            "HTTP requests (503) and WebSocket handshakes refused while draining.",
        )
        if with_samples:
            in_flight.add_metric([], coordinator.in_flight.count)
            shutting_down.add_metric([], 1 if coordinator.shutting_down else 0)
            current = coordinator.phase
            for each in PHASES:
                phase.add_metric([each.value], 1 if each is current else 0)
            refused.add_metric([], getattr(coordinator.in_flight, "refused", 0))
        yield from (in_flight, shutting_down, phase, refused)

        ok = GaugeMetricFamily(
            f"{ns}_shutdown_ok",
            "1 when the last shutdown ran every handler successfully and abandoned no work.",
            labels=["reason"],
        )
        duration = GaugeMetricFamily(
            f"{ns}_shutdown_duration_seconds",
            "Seconds from the first trigger to the end of the last shutdown.",
            labels=["reason"],
        )
        abandoned = GaugeMetricFamily(
            f"{ns}_shutdown_abandoned",
            "Requests and jobs still running when the drain ran out of time.",
        )
        handler_duration = GaugeMetricFamily(
            f"{ns}_handler_duration_seconds",
            "Seconds each shutdown handler took.",
            labels=["handler", "phase"],
        )
        outcomes = CounterMetricFamily(
            f"{ns}_handler_outcomes",
            "Shutdown handlers by outcome (ok, error, timeout, skipped).",
            labels=["handler", "phase", "outcome"],
        )
        phase_duration = GaugeMetricFamily(
            f"{ns}_phase_duration_seconds",
            "Seconds each shutdown phase took.",
            labels=["phase"],
        )
        if report is not None:
            ok.add_metric([report.reason], 1 if report.ok else 0)
            duration.add_metric([report.reason], report.duration)
            abandoned.add_metric([], report.in_flight_abandoned)
            for result in report.handlers:
                labels = [result.name, result.phase.value]
                handler_duration.add_metric(labels, result.duration)
                outcomes.add_metric([*labels, result.outcome.value], 1)
            for step in report.phases:
                phase_duration.add_metric([step.name], step.duration)
        yield from (ok, duration, abandoned, handler_duration, outcomes, phase_duration)

        tasks = GaugeMetricFamily(
            f"{ns}_shutdown_tasks",
            "A task worker's tasks in the last shutdown, by outcome.",
            labels=["outcome"],
        )
        if report is not None:
            for outcome, named in report.tasks.items():
                tasks.add_metric([outcome], len(named))
        yield tasks


def _replace(registry: CollectorRegistry, collector: _ShutdownCollector) -> None:
    """Register *collector*, first unregistering graceshut's earlier one of that namespace."""
    owners: dict[str, Any] = getattr(registry, "_names_to_collectors", {})
    stale = {
        id(owner): owner
        for owner in list(owners.values())
        if getattr(owner, "graceshut_namespace", None) == collector.graceshut_namespace
    }
    for owner in stale.values():
        registry.unregister(owner)
    try:
        registry.register(collector)
    except ValueError as exc:
        raise ValueError(
            f"cannot register graceshut's metrics: {exc}. Another collector already uses "
            f"these names; pass namespace= to instrument() to choose others"
        ) from None
