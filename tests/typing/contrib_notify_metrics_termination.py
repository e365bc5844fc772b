"""Type-checked only: the webhook, Prometheus and termination-message APIs as users write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

import graceshut
from graceshut.contrib.prometheus import ShutdownMetrics, instrument
from graceshut.contrib.termination import render_termination_message, write_termination_message
from graceshut.contrib.webhook import Webhook, WebhookResult, default_payload, notify

coordinator = graceshut.Coordinator()


def payload(ctx: graceshut.ShutdownContext) -> dict[str, Any]:
    return {**default_payload(ctx), "zone": "eu-1"}


hook: Webhook = notify(coordinator, "http://lb:8080/deregister")
notify(
    coordinator,
    "https://discovery/v1/instances/x",
    method="DELETE",
    json=None,
    headers={"Authorization": "Bearer t"},
    timeout=3,
    retries=1,
    backoff=0.1,
    attempt_timeout=1.5,
    client=httpx.AsyncClient(),
    name="discovery",
    phase=graceshut.Phase.ANNOUNCE,
)
notify(coordinator, "https://hooks/stopped", json=payload, phase="report")
result: WebhookResult | None = hook.result
ok: bool = result.ok if result is not None else False

metrics: ShutdownMetrics = instrument(coordinator)
instrument(
    coordinator,
    registry=CollectorRegistry(),
    namespace="web",
    push_gateway="http://pushgateway:9091",
    job="web",
    grouping_key={"instance": "web-0"},
    push_timeout=1.0,
)
metrics.unregister()

path: Path = write_termination_message(coordinator)
write_termination_message(coordinator, "/tmp/termination-log", max_bytes=2048)  # noqa: S108


@coordinator.on_report
def show(report: graceshut.ShutdownReport) -> None:
    text: str = render_termination_message(report, max_bytes=1024)
    del text
