"""Releasing many things at once at shutdown, and saying what may still be held.

Shared by the Redis locks and the etcd leases: every release is attempted (at most
*concurrency* at a time), the outcomes are counted, one summary line is logged, and a
`ReleaseError` is raised when some may still be held, also when the handler's timeout
cut the releases off.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from ._errors import ReleaseError

if TYPE_CHECKING:
    from .._core._context import ShutdownContext

#: How many names a log line or an error message lists before "and N more".
NAMES_SHOWN = 5

#: How one release went ("done", "gone", "error"), and the error if there was one.
Released = tuple[str, str | None]


@dataclasses.dataclass(frozen=True)
class Terms:
    """The words of one integration's log lines and errors.

    *done* and *gone* are also the outcome names its releases return and the keys of
    the counts in the summary's log fields.
    """

    things: str  # "redis locks"
    done: str  # "released"
    gone: str  # "not_owned": not held any more, which is no failure
    gone_words: str  # "no longer held"
    not_done: str  # "not released"
    still_held: str  # "may still be held"


async def release_all(
    releases: Sequence[tuple[str, Callable[[], Awaitable[Released]]]],
    *,
    handler: str,
    ctx: ShutdownContext,
    fields: dict[str, Any],
    terms: Terms,
    concurrency: int | None = None,
) -> None:
    """Run every ``(name, release)`` at once and report; each release logs its own line.

    Raises:
        ReleaseError: Some releases failed or were cut off.
    """
    outcomes: dict[int, Released] = {}
    limiter = anyio.CapacityLimiter(concurrency or max(1, len(releases)))
    started = time.monotonic()

    async def run(index: int, release: Callable[[], Awaitable[Released]]) -> None:
        async with limiter:
            outcomes[index] = await release()

    try:
        async with anyio.create_task_group() as tg:
            for index, (_, release) in enumerate(releases):
                tg.start_soon(run, index, release)
    finally:
        # Also when cut off by the handler's timeout: say what may still be held.
        for index in range(len(releases)):
            outcomes.setdefault(index, ("timeout", "cut off by the handler's timeout"))
        counts = dict.fromkeys((terms.done, terms.gone, "error", "timeout"), 0)
        for outcome, _ in outcomes.values():
            counts[outcome] += 1
        failed = [
            name for i, (name, _) in enumerate(releases) if outcomes[i][0] in ("error", "timeout")
        ]
        duration = time.monotonic() - started
        (ctx.logger.warning if failed else ctx.logger.info)(
            "%s: %d %s, %d %s, %d failed, %d cut off in %.3fs%s",
            handler,
            counts[terms.done],
            terms.done,
            counts[terms.gone],
            terms.gone_words,
            counts["error"],
            counts["timeout"],
            duration,
            f"; {terms.still_held}: {', '.join(failed[:NAMES_SHOWN])}" if failed else "",
            extra={**fields, "outcome": "error" if failed else "ok", "duration": duration} | counts,
        )
    if failed:
        more = f" and {len(failed) - NAMES_SHOWN} more" if len(failed) > NAMES_SHOWN else ""
        errors = tuple(
            f"{name}: {outcomes[i][1]}" for i, (name, _) in enumerate(releases) if outcomes[i][1]
        )
        raise ReleaseError(
            f"{len(failed)} of {len(releases)} {terms.things} {terms.not_done}: "
            f"{', '.join(failed[:NAMES_SHOWN])}{more} (first error: {errors[0]})",
            failed=errors,
        )
