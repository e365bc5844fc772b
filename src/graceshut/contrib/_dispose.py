"""Pool disposal at shutdown that waits for checked-out connections to come back.

Part of `graceshut.contrib.sqlalchemy`, which re-exports it: import it from there.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .._core._phases import Phase
from .._core._threads import run_in_daemon_thread
from ._errors import IntegrationError

if TYPE_CHECKING:
    from .._core._context import ShutdownContext
    from .._core._coordinator import Coordinator

AnyEngine = sa.Engine | AsyncEngine
"""A sync engine or an asyncio one: every function here takes both."""


class CheckedOutConnectionsError(IntegrationError):
    """Connections were still checked out when the pool had to be disposed.

    Attributes:
        checked_out: How many; `~sqlalchemy.engine.Engine.dispose` could not close them.
    """

    def __init__(self, message: str, *, checked_out: int) -> None:
        super().__init__(message)
        self.checked_out = checked_out


async def dispose_when_idle(engine: AnyEngine, *, wait: float, poll_interval: float = 0.05) -> int:
    """Wait up to *wait* seconds for checked-out connections, then dispose the pool.

    `~sqlalchemy.engine.Engine.dispose` closes only the connections checked in to the
    pool; waiting first lets requests and jobs that still hold one finish their work and
    return it. Only ``QueuePool``-type pools (the default for server databases, file
    SQLite, and async engines) count checked-out connections; with any other pool
    (``NullPool``, ``StaticPool``, ``SingletonThreadPool``) it disposes at once.

    Returns:
        How many connections were still checked out when the pool was disposed
        (0 when every one came back, or when the pool does not count them).
    """
    if isinstance(engine, AsyncEngine):
        asyncio_loop()  # fail before waiting, not after
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    counter = getattr(sync_engine.pool, "checkedout", None)
    checked_out = 0
    if callable(counter):
        end = time.monotonic() + max(0.0, wait)
        # Polled: the pool's checkin event fires before the connection is back in the
        # queue, and in the returning thread, so no event marks the count's change.
        while (checked_out := counter()) and (left := end - time.monotonic()) > 0:  # noqa: ASYNC110
            await anyio.sleep(min(poll_interval, left))
    if isinstance(engine, AsyncEngine):
        await engine.dispose()
    else:
        await run_in_daemon_thread(engine.dispose, name="graceshut dispose")
    return int(checked_out)


def dispose_engine(
    coordinator: Coordinator,
    engine: AnyEngine,
    *,
    timeout: float = 5.0,
    name: str | None = None,
    poll_interval: float = 0.05,
    phase: Phase | str = Phase.RELEASE,
) -> None:
    """At shutdown (``release`` phase), wait for checked-out connections, then dispose.

    The handler waits while its time lasts, less a reserve for closing the pool (a
    quarter of its time, at most one second), then disposes the pool whatever happens.
    If connections were still checked out then, it logs a warning (fields
    ``checked_out``, ``engine``, ``waited``) and fails with
    `CheckedOutConnectionsError`, so the report shows what was left open: those
    connections close when their holders return them, or when the process exits.

    Args:
        coordinator: Where to register the handler.
        engine: A sync `~sqlalchemy.engine.Engine` or an `AsyncEngine`.
        timeout: Seconds the handler may take.
        name: Handler name; ``sqlalchemy.dispose[<url without password>]`` by default.
        poll_interval: Seconds between two looks at the pool.
        phase: The phase it runs in; ``release`` by default.

    Example::

        engine = create_async_engine(DATABASE_URL)
        dispose_engine(coordinator, engine, timeout=5)
    """
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    url = sync_engine.url.render_as_string(hide_password=True)
    label = name or f"sqlalchemy.dispose[{url}]"

    async def dispose(ctx: ShutdownContext) -> None:
        started = time.monotonic()
        reserve = min(1.0, ctx.remaining() / 4)
        checked_out = await dispose_when_idle(
            engine, wait=ctx.remaining() - reserve, poll_interval=poll_interval
        )
        waited = time.monotonic() - started
        fields = {"handler": label, "phase": ctx.phase.value, "engine": url, "waited": waited}
        if checked_out:
            ctx.logger.warning(
                "%s: %d connections still checked out after %.3fs, pool disposed without them",
                label,
                checked_out,
                waited,
                extra={**fields, "checked_out": checked_out},
            )
            raise CheckedOutConnectionsError(
                f"{checked_out} connections to {url} still checked out after {waited:.3f}s: "
                "the pool was disposed without them (they close when returned, or at exit)",
                checked_out=checked_out,
            )
        ctx.logger.info("%s: pool disposed", label, extra={**fields, "checked_out": 0})

    coordinator.add_handler(dispose, phase=phase, timeout=timeout, name=label)


# -- helpers ----------------------------------------------------------------------------


def asyncio_loop() -> asyncio.AbstractEventLoop:
    """The running asyncio loop; an AsyncEngine has no other (trio is refused clearly)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "an AsyncEngine works on asyncio only (SQLAlchemy's asyncio extension): "
            "run the app on asyncio, or use a sync Engine, which works on trio too"
        ) from None
