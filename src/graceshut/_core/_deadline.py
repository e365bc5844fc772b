"""The deadline the kubelet really gives, where the API server can tell it.

At startup, the pod's ``spec.terminationGracePeriodSeconds`` checks the configured
grace period; at the trigger, its ``metadata.deletionTimestamp`` shortens the run's
deadline when the deletion gave less (``kubectl delete --grace-period``, evictions).
Both are opt-in (``deadline_source="api"``) and fall back to the configuration.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._pod_api import ApiUnavailable, deadline_from, fetch_pod

if TYPE_CHECKING:
    from ._budget import Run
    from ._config import Settings

logger = logging.getLogger("graceshut")


async def deadline_from_api(
    run: Run, settings: Settings, environ: Mapping[str, str] | None = None
) -> None:
    """Shorten *run*'s deadline to the pod's deletion when the API server says it is sooner.

    Any failure leaves the configured deadline, with one log line and a note in the
    report saying why.
    """
    try:
        timing = await fetch_pod(settings.api_timeout, environ)
        deadline = deadline_from(timing, run.start, settings.safety_margin)
    except ApiUnavailable as exc:
        run.deadline_detail += f"; not from the API server: {exc}"
        logger.warning(
            "deadline from the API server not used, the configured one stands (%.1fs left): %s",
            run.remaining(),
            exc,
            extra={"deadline_source": "config", "remaining": run.remaining()},
        )
        return
    seen = _describe_deletion(timing.deletion_timestamp, timing.deletion_grace_period)
    if deadline >= run.deadline:
        run.deadline_detail += f"; the API server's {seen} is no sooner"
        logger.info(
            "deadline: the configured one stands (%.1fs left), the pod's %s is no sooner",
            run.remaining(),
            seen,
            extra={"deadline_source": "config", "remaining": run.remaining()},
        )
        return
    run.deadline = deadline
    run.deadline_source = "api"
    run.note("deadline", source="api", budget=round(deadline - run.start, 3))
    run.deadline_detail = (
        f"from the API server: {seen} - safety margin {settings.safety_margin:g}s, "
        f"sooner than the configured grace period {settings.grace_period:g}s"
    )
    logger.warning(
        "deadline from the API server: %.1fs left, not %.1fs (%s): the propagation "
        "delay and the drain shrink first",
        run.remaining(),
        run.start + settings.budget - time.monotonic(),
        seen,
        extra={"deadline_source": "api", "remaining": run.remaining()},
    )


async def grace_period_from_pod(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> Settings:
    """*settings* with the pod's ``spec.terminationGracePeriodSeconds`` taken into account.

    Read once at startup: it is the grace period when none is configured; a configured
    one that differs is a warning naming both, and the smaller one is used. Any
    failure leaves *settings* as they are, with one log line saying why.
    """
    try:
        timing = await fetch_pod(settings.api_timeout, environ)
    except ApiUnavailable as exc:
        logger.warning(
            "grace period not checked against the pod's spec, %gs (%s) stands: %s",
            settings.grace_period,
            settings.grace_period_source,
            exc,
            extra={"deadline_source": "config"},
        )
        return settings
    spec = timing.grace_period
    if spec is None or spec == settings.grace_period:
        return settings
    if settings.grace_period_source != "default" and spec > settings.grace_period:
        logger.warning(
            "the pod's terminationGracePeriodSeconds is %gs, %s is %gs: using %gs, the "
            "smaller; set both from one place",
            spec,
            settings.grace_period_source,
            settings.grace_period,
            settings.grace_period,
            extra={"deadline_source": "config"},
        )
        return settings
    if spec <= settings.safety_margin:
        logger.warning(
            "the pod's terminationGracePeriodSeconds is %gs, not more than the safety "
            "margin (%gs): keeping %gs (%s)",
            spec,
            settings.safety_margin,
            settings.grace_period,
            settings.grace_period_source,
            extra={"deadline_source": "config"},
        )
        return settings
    if settings.grace_period_source == "default":
        logger.info("grace period %gs from the pod's spec.terminationGracePeriodSeconds", spec)
    else:
        logger.warning(
            "the pod's terminationGracePeriodSeconds is %gs, %s is %gs: using %gs, the "
            "smaller; set both from one place",
            spec,
            settings.grace_period_source,
            settings.grace_period,
            spec,
            extra={"deadline_source": "config"},
        )
    return dataclasses.replace(
        settings, grace_period=spec, grace_period_source="spec.terminationGracePeriodSeconds"
    )


def _describe_deletion(stamp: float | None, grace: float | None) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp or 0))
    return f"deletionTimestamp {when}" + (
        f" (deletionGracePeriodSeconds {grace:g})" if grace is not None else ""
    )
