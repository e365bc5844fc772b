"""Type-checked only: fallbacks and the spill targets as users write them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

import graceshut
from graceshut.contrib.cache import flush_mapping
from graceshut.contrib.spill import (
    ReplayResult,
    SpillDirectory,
    SpillLog,
    SpillReplayError,
    SpillWriteError,
)
from graceshut.contrib.sqlalchemy import WriteBehindBuffer
from graceshut.contrib.webhook import notify

coordinator = graceshut.Coordinator()


async def spill_counters(ctx: graceshut.ShutdownContext) -> dict[str, Any]:
    error: BaseException | None = ctx.error
    return {"saved": 1, "error": repr(error)}


def spill_sync(ctx: graceshut.ShutdownContext) -> None: ...


@coordinator.on_shutdown("flush", timeout=5, fallback=spill_counters)
async def push_counters(ctx: graceshut.ShutdownContext) -> None: ...


coordinator.add_handler(push_counters, name="again", fallback=spill_sync)

spill = SpillDirectory("/var/lib/app/spill", fsync=True)
events = sa.Table("events", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
buffer = WriteBehindBuffer(coordinator, sa.create_engine("sqlite://"), events, spill=spill)
cache: dict[str, str] = {}
flusher = flush_mapping(coordinator, cache, lambda _batch: None, spill=SpillLog())
webhook = notify(coordinator, "http://audit/", spill=spill)


async def startup() -> None:
    try:
        replayed: ReplayResult = await buffer.replay()
    except SpillReplayError as exc:  # start anyway: the rows wait on the volume
        waiting: int = exc.pending + exc.written
        del waiting
    else:
        del replayed
    written: int = (await flusher.replay()).written
    sent: int = (await webhook.replay()).written
    counts: tuple[int, int, int, int] = (buffer.spilled, buffer.lost, flusher.spilled, flusher.lost)
    del written, sent, counts


def spill_now(records: list[dict[str, Any]]) -> int:
    try:
        return spill.spill("mine", records).records
    except SpillWriteError as exc:  # a full volume: some made it
        return exc.spilled.records


def on_report(report: graceshut.ShutdownReport) -> None:
    for handler in report.handlers:
        fallback: graceshut.FallbackResult | None = handler.fallback
        if fallback is not None and fallback.detail is not None:
            spilled: object = fallback.detail.get("spilled")
            del spilled
