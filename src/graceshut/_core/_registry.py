"""What the app asked the shutdown to do: handlers by phase, report listeners, drain hooks."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from ._phases import PHASES, Phase

if TYPE_CHECKING:
    from ._config import Settings
    from ._draining import Ender
    from ._final import FinalFlush
    from ._handlers import Handler
    from ._report import ShutdownReport

logger = logging.getLogger("graceshut")

ReportListener = Callable[["ShutdownReport"], object]
DrainHook = Callable[[], Awaitable[None]]
Unsubscribe = Callable[[], None]

T = TypeVar("T")


class Subscribers(Generic[T]):
    """An ordered list of callbacks, each added with a way to take it back out."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[T] = []

    def add(self, item: T) -> Unsubscribe:
        """Append *item*; the callable returned removes it (idempotent)."""
        self._items.append(item)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._items.remove(item)

        return unsubscribe

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def remove(self, item: T) -> None:
        """Remove *item* if it is there."""
        with contextlib.suppress(ValueError):
            self._items.remove(item)

    def __iter__(self) -> Iterator[T]:
        # A snapshot: a callback may unsubscribe itself while the others are called.
        return iter(tuple(self._items))


class Registry:
    """The registered handlers, checked against the time budget as they come in."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._needs = dict.fromkeys(PHASES, 0.0)
        self.report_listeners: Subscribers[ReportListener] = Subscribers()
        """Called with the final report, before any waiter wakes."""
        self.drain_hooks: Subscribers[DrainHook] = Subscribers()
        """Run when the drain begins, alongside the drain handlers."""
        self.enders: Subscribers[Ender] = Subscribers()
        """End what still runs at the stream grace and the drain's deadline."""
        self.final_flushes: Subscribers[tuple[str, FinalFlush]] = Subscribers()
        """Run after the report listeners, on daemon threads, until the deadline."""

    def add(self, handler: Handler, settings: Settings) -> None:
        """Register *handler*, refusing a duplicate name or a timeout past the budget.

        Raises:
            ValueError: The name is taken, or the timeout is longer than the budget.
        """
        if handler.name in self._handlers:
            raise ValueError(
                f"a shutdown handler named {handler.name!r} is already registered: "
                "pass name= to tell them apart"
            )
        budget = settings.budget
        if handler.timeout > budget:
            raise ValueError(
                f"handler {handler.name!r} has timeout={handler.timeout:g}s, longer than the "
                f"whole shutdown budget of {budget:g}s (grace_period "
                f"{settings.grace_period:g} - safety_margin {settings.safety_margin:g})"
            )
        self._handlers[handler.name] = handler
        self._needs[handler.phase] = max(self._needs[handler.phase], handler.timeout)
        needed = sum(self._needs.values())
        if needed > budget:
            logger.warning(
                "handler timeouts add up to %.1fs across phases, more than the %.1fs budget: "
                "if they all run long, the propagation delay and the drain give way first, "
                "then announce, flush, release and report share what is left in proportion "
                "to what they ask for",
                needed,
                budget,
                extra={"handler": handler.name, "phase": handler.phase.value},
            )

    @property
    def handlers(self) -> tuple[Handler, ...]:
        """Every handler, in registration order."""
        return tuple(self._handlers.values())

    def runnable(self, *, leader: bool) -> list[Handler]:
        """The handlers this process runs: once-per-pod ones only in the pod's leader."""
        return [h for h in self._handlers.values() if leader or not h.once_per_pod]

    def for_phase(self, phase: Phase, *, leader: bool) -> list[Handler]:
        """The handlers of *phase* this process runs, in registration order."""
        return [h for h in self.runnable(leader=leader) if h.phase is phase]

    def needs(self) -> dict[Phase, float]:
        """For each phase, the longest timeout among its handlers."""
        return dict(self._needs)
