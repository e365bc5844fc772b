"""Long-lived requests in-process, on asyncio and trio: streams learn of the drain, get
`stream_grace`, then are ended; long-polls are ended at the drain's deadline; background
work holds the drain open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

import graceshut
import graceshut.starlette
from graceshut import ConfigError, Coordinator
from graceshut._process._signals import SignalChain
from graceshut.asgi import GracefulShutdownMiddleware
from graceshut.hypercorn import _OwnSignals

pytestmark = pytest.mark.anyio

Message = dict[str, Any]


def fast(**kwargs: float) -> Coordinator:
    settings = {"grace_period": 3.0, "safety_margin": 0.5, "propagation_delay": 0.1}
    settings.update(kwargs)
    return Coordinator(**settings, environ={})


def make_app(coordinator: Coordinator, log: list[str]) -> Starlette:  # noqa: C901 - one route a shape
    async def endless(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"tick\n"
                    await anyio.sleep(0.05)
            finally:
                log.append("stream-finally")

        return StreamingResponse(chunks())

    def polite(request: Request) -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            # Sync code in a worker thread: the flag is safe to read from any thread.
            while not coordinator.draining:
                yield b"tick\n"
                coordinator.drain_started.wait(0.05)
            yield b"bye\n"

        return StreamingResponse(chunks())

    async def poll(request: Request) -> PlainTextResponse:
        try:
            await anyio.sleep(3600)
        finally:
            log.append("poll-finally")
        return PlainTextResponse("never")

    async def background(request: Request) -> PlainTextResponse:
        async def work() -> None:
            await anyio.sleep(0.6)
            log.append("background-done")

        return PlainTextResponse("accepted", background=BackgroundTask(work))

    app = Starlette(
        routes=[
            Route("/stream", endless),
            Route("/polite", polite),
            Route("/poll", poll),
            Route("/background", background),
        ]
    )
    graceshut.starlette.install(app, coordinator, signals=False)

    @coordinator.on_shutdown("flush", timeout=0.5, name="flush")
    def flush() -> None:
        log.append("flush")

    return app


async def call(app: Any, path: str, messages: list[Message], http_version: str = "1.1") -> None:
    """One raw ASGI request, recording what the app sends."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": http_version,
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"secret=1",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    disconnected = anyio.Event()

    async def receive() -> Message:
        if not messages:
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        # As servers do: one response per request, nothing after its end.
        if messages and message["type"] == "http.response.start":
            raise RuntimeError("response already started")
        if messages and completed(messages):
            raise RuntimeError("response already complete")
        messages.append(message)

    await app(scope, receive, send)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for *condition* to hold (a task reached its point), checking every few ms."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def completed(messages: list[Message]) -> bool:
    last = messages[-1]
    return last["type"] == "http.response.body" and not last.get("more_body", False)


async def test_a_stream_that_ignores_the_drain_is_cut_after_stream_grace() -> None:
    """An endless stream is cancelled stream_grace after the drain began, left incomplete."""
    # A long budget, so that a stream held to the drain's end (9 s) cannot pass for one cut
    # after its 0.3 s of grace, however loaded the machine.
    coordinator = fast(stream_grace=0.3, grace_period=10.0)
    log: list[str] = []
    app = make_app(coordinator, log)
    coordinator.attach()
    messages: list[Message] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, app, "/stream", messages)
        await until(lambda: bool(messages))
        started = time.monotonic()
        report = await coordinator.shutdown()
    ended_after = time.monotonic() - started
    assert log[0] == "stream-finally"
    assert messages[0]["status"] == 200
    assert not completed(messages), "a cut stream must not look complete"
    assert report.abandoned == ("GET /stream",)
    assert report.in_flight_abandoned == 1
    assert report.exit_code == 0
    assert ended_after < 5, "cut after stream_grace, not held to the drain's end (9 s)"


async def test_a_stream_that_checks_the_flag_ends_complete_and_is_not_abandoned() -> None:
    """Sync generators read `draining` and `drain_started`: they end with a complete body."""
    coordinator = fast(stream_grace=1.0)
    app = make_app(coordinator, [])
    coordinator.attach()
    messages: list[Message] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, app, "/polite", messages)
        await until(lambda: bool(messages))
        report = await coordinator.shutdown()
    assert completed(messages)
    assert messages[-2]["body"] == b"bye\n"
    assert report.abandoned == ()
    assert report.ok


async def test_a_long_poll_is_ended_at_the_drains_deadline_with_a_503() -> None:
    """A long-poll is cancelled before the deadline (its finally runs) and answered 503."""
    coordinator = fast(stream_grace=0.1)
    log: list[str] = []
    app = make_app(coordinator, log)
    coordinator.attach()
    messages: list[Message] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, app, "/poll", messages)
        await until(lambda: coordinator.in_flight.count == 1)
        report = await coordinator.shutdown()
    assert log == ["poll-finally", "flush"]
    assert messages[0]["status"] == 503
    assert (b"connection", b"close") in messages[0]["headers"]
    assert completed(messages)
    assert report.abandoned == ("GET /poll",)  # no query string
    assert report.duration < 3.0, "ended within the grace period"


async def test_background_tasks_hold_the_drain_and_are_not_cut_as_streams() -> None:
    """A response's BackgroundTask counts as in flight until done, past stream_grace."""
    coordinator = fast(stream_grace=0.1)
    log: list[str] = []
    app = make_app(coordinator, log)
    coordinator.attach()
    messages: list[Message] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, app, "/background", messages)
        # The response went out; its task runs on.
        await until(lambda: bool(messages) and completed(messages))
        assert coordinator.in_flight.count == 1
        report = await coordinator.shutdown()
    assert log == ["background-done", "flush"]
    assert report.abandoned == ()
    assert report.ok


async def test_spawned_work_is_waited_for_and_cut_by_its_own_timeout() -> None:
    """Coordinator.spawn: the drain waits for the job; a job past its timeout is cancelled."""
    coordinator = fast()
    done: list[str] = []

    async def job(name: str, seconds: float) -> None:
        await anyio.sleep(seconds)
        done.append(name)

    coordinator.spawn(job, "quick", 0.3, name="quick")
    coordinator.spawn(job, "slow", 5.0, name="slow", timeout=0.2)
    assert coordinator.in_flight.count == 2
    report = await coordinator.shutdown()
    assert done == ["quick"]
    assert coordinator.in_flight.count == 0
    assert report.ok
    with pytest.raises(ValueError, match="timeout"):
        coordinator.spawn(job, "bad", 1.0, timeout=0)


async def test_a_tracked_job_is_ended_at_the_drains_deadline() -> None:
    """Work in track() is cancelled at the end of the drain's share and named in the report."""
    coordinator = fast()
    unwound: list[str] = []

    async def stuck() -> None:
        try:
            async with coordinator.track("export"):
                await anyio.sleep(60)
        finally:
            unwound.append("export")

    async with anyio.create_task_group() as tg:
        tg.start_soon(stuck)
        await until(lambda: coordinator.in_flight.count == 1)
        report = await coordinator.shutdown()
    assert unwound == ["export"]
    assert report.abandoned == ("export",)


async def test_http2_responses_get_no_connection_close() -> None:
    """While shutting down, HTTP/1.1 responses get Connection: close and HTTP/2 ones do not."""
    coordinator = fast(propagation_delay=1.0)
    app = make_app(coordinator, [])
    coordinator.attach()
    coordinator.trigger("test")
    h1: list[Message] = []
    h2: list[Message] = []
    await call(app, "/background", h1)
    await call(app, "/background", h2, http_version="2")
    assert (b"connection", b"close") in h1[0]["headers"]
    assert all(name != b"connection" for name, _ in h2[0]["headers"])
    await coordinator.shutdown()


async def test_the_apps_own_connection_header_is_replaced_and_its_message_left_alone() -> None:
    """A Connection header of the app's, in any case, gives way to ``close``; a message
    the app sends again (its header list shared) is not changed under it."""
    coordinator = fast(propagation_delay=1.0)
    headers = [(b"Connection", b"Keep-Alive"), (b"set-cookie", b"a=b"), (b"x-trace-id", b"7")]
    as_sent = list(headers)
    start = {"type": "http.response.start", "status": 200, "headers": headers}

    async def app(scope: Message, receive: Callable[[], Any], send: Callable[..., Any]) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = GracefulShutdownMiddleware(app, coordinator)
    coordinator.attach()
    coordinator.trigger("test")
    first: list[Message] = []
    second: list[Message] = []
    await call(middleware, "/", first)
    await call(middleware, "/", second)
    for sent in (first, second):
        assert sent[0]["headers"] == [
            (b"set-cookie", b"a=b"),
            (b"x-trace-id", b"7"),
            (b"connection", b"close"),
        ]
    assert start["headers"] is headers
    assert headers == as_sent
    await coordinator.shutdown()


async def test_on_drain_hooks_run_at_the_drain_and_unsubscribe() -> None:
    """on_drain runs a hook when the drain begins; its return value unsubscribes it."""
    coordinator = fast(propagation_delay=0.0)
    seen: list[str] = []

    async def kept() -> None:
        seen.append("kept")

    async def dropped() -> None:
        seen.append("dropped")

    coordinator.on_drain(kept)
    unsubscribe = coordinator.on_drain(dropped)
    unsubscribe()
    unsubscribe()  # idempotent
    await coordinator.shutdown()
    assert seen == ["kept"]


async def test_the_signal_handler_answers_should_exit_when_the_drain_begins() -> None:
    """sse-starlette reads signal.getsignal(SIGTERM).__self__.should_exit: ours flips at drain."""
    coordinator = fast(propagation_delay=0.3)
    chain = SignalChain(coordinator)
    runner = _OwnSignals(coordinator)  # the hypercorn runner's handler
    assert (chain.should_exit, runner.should_exit) == (False, False)
    coordinator.attach()
    coordinator.trigger("test")
    assert chain.should_exit is False  # announce and propagation: still serving
    await coordinator.wait_for_drain()
    assert (chain.should_exit, runner.should_exit) == (True, True)
    assert coordinator.drain_started.is_set()
    await coordinator.wait()
    chain.uninstall()


def test_stream_grace_is_validated_like_the_other_settings() -> None:
    """stream_grace and GRACESHUT_STREAM_GRACE: bad values name the argument or variable."""
    assert Coordinator(environ={}).settings.stream_grace == 5.0
    assert Coordinator(environ={"GRACESHUT_STREAM_GRACE": "2.5"}).settings.stream_grace == 2.5
    assert Coordinator(stream_grace=0, environ={}).settings.stream_grace == 0
    with pytest.raises(ConfigError, match="stream_grace=-1"):
        Coordinator(stream_grace=-1, environ={})
    with pytest.raises(ConfigError, match="GRACESHUT_STREAM_GRACE='soon'"):
        Coordinator(environ={"GRACESHUT_STREAM_GRACE": "soon"})


def test_draining_is_readable_from_another_thread() -> None:
    """The flag and the threading.Event work from plain threads, with no event loop."""
    coordinator = fast()
    seen: list[bool] = []
    thread = threading.Thread(
        target=lambda: seen.append(coordinator.drain_started.wait(0.01) or coordinator.draining)
    )
    thread.start()
    thread.join()
    assert seen == [False]


async def test_only_this_middlewares_requests_are_ended_not_its_routes_or_the_lifespan() -> None:
    """At the deadline a route waiting for the report and another app's request live on."""
    coordinator = fast(stream_grace=0.1)
    other = fast()

    async def poll(scope: Any, receive: Any, send: Any) -> None:
        await anyio.sleep(3600)

    async def wait_for_report(scope: Any, receive: Any, send: Any) -> None:
        report = await coordinator.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": ",".join(report.abandoned).encode()})

    waiter = GracefulShutdownMiddleware(poll, coordinator, routes={"/report": wait_for_report})
    elsewhere = GracefulShutdownMiddleware(poll, other)
    coordinator.attach()
    other.attach()
    polled: list[Message] = []
    reported: list[Message] = []
    unrelated: list[Message] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, waiter, "/poll", polled)
        tg.start_soon(call, waiter, "/report", reported)
        tg.start_soon(call, elsewhere, "/poll", unrelated)
        await until(lambda: coordinator.in_flight.count == 1 == other.in_flight.count)
        report = await coordinator.shutdown()
        await anyio.sleep(0.05)
        assert unrelated == []  # still waiting: not ours to end
        tg.cancel_scope.cancel()
    assert report.abandoned == ("GET /poll",)
    assert reported[0]["status"] == 200
    assert reported[1]["body"] == b"GET /poll"
    assert polled[0]["status"] == 503


async def test_a_request_served_before_the_coordinator_was_attached_drains() -> None:
    """A request already running when the loop is attached still ends the drain when done."""
    coordinator = fast(propagation_delay=0.0)
    release = anyio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    app = GracefulShutdownMiddleware(slow, coordinator)
    messages: list[Message] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, app, "/slow", messages)
        await until(lambda: coordinator.in_flight.count == 1)
        tg.start_soon(coordinator.shutdown)
        await coordinator.wait_for_drain()
        release.set()
    assert completed(messages)
    assert coordinator.report is not None
    assert coordinator.report.ok
