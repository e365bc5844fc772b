"""Registered shutdown handlers, and running a phase's handlers under their deadlines."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from anyio import get_cancelled_exc_class

from ._concurrent import Finished, run_concurrently
from ._context import ShutdownContext
from ._phases import Phase
from ._report import HandlerResult, Outcome
from ._threads import run_in_daemon_thread

logger = logging.getLogger("graceshut")

HandlerFunc = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Handler:
    """A callable registered for one phase, with its time limit."""

    func: HandlerFunc
    name: str
    phase: Phase
    timeout: float
    takes_context: bool
    is_async: bool
    once_per_pod: bool = False


def make_handler(
    func: HandlerFunc,
    phase: Phase | str,
    timeout: float,
    name: str | None,
    *,
    once_per_pod: bool = False,
) -> Handler:
    """Check a registration and describe how to call the handler."""
    if not callable(func):
        raise TypeError(f"a shutdown handler must be callable, got {func!r}")
    parsed = Phase.parse(phase)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout={timeout!r} must be a finite number of seconds above 0")
    return Handler(
        func=func,
        name=name or _qualified_name(func),
        phase=parsed,
        timeout=float(timeout),
        takes_context=_takes_context(func),
        is_async=is_async_callable(func),
        once_per_pod=once_per_pod,
    )


async def run_handlers(
    handlers: Sequence[Handler],
    reason: str,
    end: float,
    run_deadline: float,
    into: list[HandlerResult],
) -> None:
    """Run *handlers* at once, each until it returns, its timeout or *end* (monotonic).

    Never raises for a handler: their results go *into* the list, in order, also when
    the caller is cancelled (with what had ended by then). Each handler's log line is
    written as it ends. *run_deadline* is the deadline of the whole sequence, for the
    ``remaining`` field of the log records (seconds left until that deadline).
    """
    started = time.monotonic()
    results: list[HandlerResult | None] = [None] * len(handlers)
    started_ones: list[int] = []
    calls: list[Callable[[], Awaitable[None]]] = []
    deadlines: list[float] = []
    for index, handler in enumerate(handlers):
        deadline = min(end, started + handler.timeout)
        if deadline <= started:
            results[index] = _skipped(handler, reason, run_deadline - started)
            continue
        started_ones.append(index)
        calls.append(functools.partial(_invoke, handler, reason, deadline))
        deadlines.append(deadline)

    def record(position: int, how: Finished) -> None:
        index = started_ones[position]
        results[index] = _record(handlers[index], reason, started, how, run_deadline)

    try:
        await run_concurrently(calls, deadlines, record)
    finally:
        into.extend(result for result in results if result is not None)


async def _invoke(handler: Handler, reason: str, deadline: float) -> None:
    args = (
        (ShutdownContext(reason=reason, phase=handler.phase, deadline=deadline, logger=logger),)
        if handler.takes_context
        else ()
    )
    if handler.is_async:
        await handler.func(*args)
    else:
        returned = await run_in_daemon_thread(
            functools.partial(handler.func, *args), name=f"graceshut {handler.name}"
        )
        refuse_awaitable(returned, f"the handler {handler.name}")


def _skipped(handler: Handler, reason: str, remaining: float) -> HandlerResult:
    logger.warning(
        "handler %s skipped: no time left before the deadline",
        handler.name,
        extra=_fields(handler, reason, Outcome.SKIPPED, 0.0, remaining),
    )
    return HandlerResult(handler.name, handler.phase, Outcome.SKIPPED, 0.0, "no time left")


def _record(
    handler: Handler, reason: str, started: float, how: Finished, run_deadline: float
) -> HandlerResult:
    duration = how.at - started
    outcome = how.outcome
    if outcome is Outcome.OK:
        if logger.isEnabledFor(logging.INFO):  # a thousand handlers: skip building the fields
            logger.info(
                "handler %s: ok in %.3fs",
                handler.name,
                duration,
                extra=_fields(handler, reason, outcome, duration, run_deadline - time.monotonic()),
            )
        return HandlerResult(handler.name, handler.phase, outcome, duration, None)
    extra = _fields(handler, reason, outcome, duration, run_deadline - time.monotonic())
    if outcome is Outcome.TIMEOUT:
        error = f"did not finish within {duration:.3f}s"
        logger.warning("handler %s: %s", handler.name, error, extra=extra)
    else:
        failure = how.error
        error = (
            "cancelled"
            if failure is None or isinstance(failure, get_cancelled_exc_class())
            else f"{type(failure).__name__}: {failure}"
        )
        logger.error(
            "handler %s failed after %.3fs: %s",
            handler.name,
            duration,
            error,
            exc_info=failure,
            extra=extra,
        )
    return HandlerResult(handler.name, handler.phase, outcome, duration, error)


def _fields(
    handler: Handler, reason: str, outcome: Outcome, duration: float, remaining: float
) -> dict[str, object]:
    return {
        "phase": handler.phase.value,
        "handler": handler.name,
        "reason": reason,
        "outcome": outcome.value,
        "duration": duration,
        "remaining": remaining,
    }


def refuse_awaitable(result: object, what: str) -> None:
    """Raise when a plain callable returned an awaitable: nobody awaited it, nothing was done.

    A lambda around an async client is the usual cause; taking its return for a success
    would report work as done that never ran. *what* names the callable in the error.
    """
    if not inspect.isawaitable(result):
        return
    if inspect.iscoroutine(result):
        result.close()
    raise TypeError(
        f"{what} returned an awaitable from a plain function, which nobody awaited: "
        "make it an `async def` so that it runs on the event loop"
    )


def _qualified_name(func: HandlerFunc) -> str:
    target = func.func if isinstance(func, functools.partial) else func
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{qualname}" if module else qualname


def is_async_callable(func: HandlerFunc) -> bool:
    """Whether calling *func* gives a coroutine (functions, partials, async ``__call__``)."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - instances with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _takes_context(func: HandlerFunc) -> bool:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: call them bare
        return False
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is p.empty]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values())
    required_kw = [
        p
        for p in signature.parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    if len(required) > 1 or required_kw:
        raise TypeError(
            f"shutdown handler {func!r} must take no argument or one (the ShutdownContext), "
            f"its signature is {signature}"
        )
    return bool(required) or (variadic and not positional) or len(positional) == 1
