"""Type-checked only: the streaming and background-work APIs as users write them."""

from __future__ import annotations

from collections.abc import Callable

from typing_extensions import assert_type

import graceshut

coordinator = graceshut.Coordinator(stream_grace=2.5)


async def send_email(address: str) -> None: ...


async def on_drain() -> None: ...


def stream_ticks() -> None:
    while not coordinator.draining:
        coordinator.drain_started.wait(1.0)


async def handler() -> None:
    coordinator.spawn(send_email, "a@example.com", name="welcome", timeout=30)
    await coordinator.wait_for_drain()


unsubscribe = coordinator.on_drain(on_drain)
assert_type(unsubscribe, Callable[[], None])
assert_type(coordinator.settings.stream_grace, float)
report = coordinator.report
if report is not None:
    assert_type(report.abandoned, tuple[str, ...])
