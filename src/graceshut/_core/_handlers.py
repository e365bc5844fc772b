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
from ._fallback import Attempts, run_with_fallback
from ._phases import Phase
from ._report import FallbackResult, HandlerResult, Outcome
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
    fallback: Handler | None = None
    """Runs when this handler fails or times out, within the same deadline."""


def make_handler(
    func: HandlerFunc,
    phase: Phase | str,
    timeout: float,
    name: str | None,
    *,
    once_per_pod: bool = False,
    fallback: HandlerFunc | None = None,
) -> Handler:
    """Check a registration and describe how to call the handler (and its fallback)."""
    if not callable(func):
        raise TypeError(f"a shutdown handler must be callable, got {func!r}")
    if fallback is not None and not callable(fallback):
        raise TypeError(f"fallback must be callable, got {fallback!r}")
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
        fallback=None if fallback is None else _make_fallback(fallback, parsed, timeout),
    )


def _make_fallback(func: HandlerFunc, phase: Phase, timeout: float) -> Handler:
    # The contrib fallbacks carry a `name` (as contrib handlers do): use it in the report.
    name = getattr(func, "name", None)
    return Handler(
        func=func,
        name=name if isinstance(name, str) and name else _qualified_name(func),
        phase=phase,
        timeout=float(timeout),
        takes_context=_takes_context(func),
        is_async=is_async_callable(func),
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
    calls: list[Callable[[], Awaitable[object]]] = []
    deadlines: list[float] = []
    attempts: dict[int, Attempts] = {}
    for index, handler in enumerate(handlers):
        deadline = min(end, started + handler.timeout)
        if deadline <= started:
            results[index] = _skipped(handler, reason, run_deadline - started)
            continue
        started_ones.append(index)
        if handler.fallback is None:
            calls.append(functools.partial(_invoke, handler, reason, deadline))
        else:
            attempts[index] = Attempts()
            invoke = functools.partial(_invoke_either, handler, reason)
            calls.append(functools.partial(run_with_fallback, invoke, deadline, attempts[index]))
        deadlines.append(deadline)

    def record(position: int, how: Finished) -> None:
        index = started_ones[position]
        handler = handlers[index]
        tries = attempts.get(index)
        own = how if tries is None or tries.handler is None else tries.handler
        result = _record(handler, reason, started, own, run_deadline)
        if tries is not None and tries.fallback_started is not None:
            result = _with_fallback(
                result, handler, reason=reason, tries=tries, how=how, run_deadline=run_deadline
            )
        results[index] = result

    try:
        await run_concurrently(calls, deadlines, record)
    finally:
        into.extend(result for result in results if result is not None)


async def _invoke(
    handler: Handler, reason: str, deadline: float, error: BaseException | None = None
) -> object:
    context = ShutdownContext(
        reason=reason, phase=handler.phase, deadline=deadline, logger=logger, error=error
    )
    args = (context,) if handler.takes_context else ()
    if handler.is_async:
        return await handler.func(*args)
    returned = await run_in_daemon_thread(
        functools.partial(handler.func, *args), name=f"graceshut {handler.name}"
    )
    refuse_awaitable(returned, f"the handler {handler.name}")
    return returned


async def _invoke_either(
    handler: Handler, reason: str, deadline: float, error: BaseException | None
) -> object:
    """The handler itself (*error* None), or its fallback told why the handler failed."""
    if error is None:
        return await _invoke(handler, reason, deadline)
    assert handler.fallback is not None  # noqa: S101 - only called for handlers with one
    return await _invoke(handler.fallback, reason, deadline, error)


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
        error = _error_text(failure)
        logger.error(
            "handler %s failed after %.3fs: %s",
            handler.name,
            duration,
            error,
            exc_info=failure,
            extra=extra,
        )
    return HandlerResult(handler.name, handler.phase, outcome, duration, error)


def _with_fallback(
    result: HandlerResult,
    handler: Handler,
    *,
    reason: str,
    tries: Attempts,
    how: Finished,
    run_deadline: float,
) -> HandlerResult:
    """*result* with its fallback's record; logs how the fallback went."""
    assert handler.fallback is not None  # noqa: S101 - set when the fallback started
    assert tries.fallback_started is not None  # noqa: S101
    # Not finished on its own: cut off with the whole call at the deadline (or cancelled).
    finished = tries.fallback or how
    fallback = handler.fallback
    duration = finished.at - tries.fallback_started
    extra = {
        **_fields(handler, reason, finished.outcome, duration, run_deadline - time.monotonic()),
        "fallback": fallback.name,
        "detail": dict(tries.detail) if tries.detail else None,
    }
    error: str | None = None
    if finished.outcome is Outcome.TIMEOUT:
        error = f"did not finish within {duration:.3f}s"
    elif finished.outcome is Outcome.ERROR:
        error = _error_text(finished.error)
    record = FallbackResult(fallback.name, finished.outcome, duration, error, tries.detail)
    if error is None:
        logger.info("handler %s: fallback %s", handler.name, record.describe(), extra=extra)
    else:
        logger.error(
            "handler %s: fallback %s",
            handler.name,
            record.describe(),
            exc_info=finished.error if finished.outcome is Outcome.ERROR else None,
            extra=extra,
        )
    return dataclasses.replace(result, fallback=record)


def _error_text(failure: BaseException | None) -> str:
    if failure is None or isinstance(failure, get_cancelled_exc_class()):
        return "cancelled"
    return f"{type(failure).__name__}: {failure}"


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
