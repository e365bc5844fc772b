from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest

from graceshut import Coordinator, Outcome, Phase, ShutdownContext
from graceshut.contrib.webhook import WebhookError, default_payload, notify

from ._http_recorder import Recorder, closed_port_url, serving

pytestmark = pytest.mark.anyio


def fast() -> Coordinator:
    return Coordinator(grace_period=10, safety_margin=1, propagation_delay=0, environ={})


@pytest.fixture
def server() -> Iterator[Recorder]:
    with serving() as recorder:
        yield recorder


async def test_posts_the_default_payload_and_the_report_is_ok(
    server: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server receives one JSON POST with reason, pod and pid; the handler is ok."""
    monkeypatch.setenv("POD_NAME", "web-7d9f-abcde")
    coordinator = fast()
    hook = notify(coordinator, f"{server.url}/deregister", headers={"X-Token": "s3cret"})

    report = await coordinator.shutdown("SIGTERM")

    assert report.ok, report.to_dict()
    [request] = server.received
    assert (request.method, request.path) == ("POST", "/deregister")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-token"] == "s3cret"
    assert request.json() == {
        "event": "shutdown",
        "reason": "SIGTERM",
        "pod": "web-7d9f-abcde",
        "pid": os.getpid(),
    }
    [result] = report.handlers
    assert (result.phase, result.outcome) == (Phase.ANNOUNCE, Outcome.OK)
    assert hook.result is not None
    assert (hook.result.status, hook.result.attempts, hook.result.ok) == (200, 1, True)


async def test_pod_name_falls_back_to_hostname(
    server: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without POD_NAME, the payload names the pod from HOSTNAME (set by Kubernetes)."""
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.setenv("HOSTNAME", "web-0")
    coordinator = fast()
    notify(coordinator, server.url)
    await coordinator.shutdown()
    assert server.received[0].json()["pod"] == "web-0"


async def test_custom_method_payload_builder_and_no_body(server: Recorder) -> None:
    """A payload callable gets the context; json=None sends no body; the method is used."""
    coordinator = fast()
    notify(
        coordinator,
        f"{server.url}/a",
        method="put",
        json=lambda ctx: {**default_payload(ctx), "phase": ctx.phase.value},
    )
    notify(coordinator, f"{server.url}/b", method="DELETE", json=None)

    report = await coordinator.shutdown()

    assert report.ok, report.to_dict()
    by_path = {r.path: r for r in server.received}
    assert by_path["/a"].method == "PUT"
    assert by_path["/a"].json()["phase"] == "announce"
    assert by_path["/b"].method == "DELETE"
    assert by_path["/b"].body == b""


async def test_a_stopped_notice_can_go_out_in_the_report_phase(server: Recorder) -> None:
    """phase="report" sends after the flush handlers have finished."""
    coordinator = fast()
    order: list[str] = []
    coordinator.add_handler(lambda: order.append("flush"), phase="flush", timeout=1, name="f")
    notify(coordinator, server.url, phase="report", json=lambda _ctx: order.append("report"))
    report = await coordinator.shutdown()
    assert report.ok, report.to_dict()
    assert order == ["flush", "report"]
    assert report.handlers[-1].phase is Phase.REPORT
    assert len(server.received) == 1


async def test_retries_5xx_then_succeeds(server: Recorder) -> None:
    """Two 503 answers are retried with backoff; the third attempt succeeds and is recorded."""
    server.fail_times = 2
    coordinator = fast()
    hook = notify(coordinator, server.url, retries=3, backoff=0.05)

    report = await coordinator.shutdown()

    assert report.ok, report.to_dict()
    assert len(server.received) == 3
    gaps = [b.at - a.at for a, b in zip(server.received, server.received[1:], strict=False)]
    assert gaps[0] >= 0.04  # backoff 0.05, then
    assert gaps[1] >= 0.09  # doubled
    assert hook.result is not None
    assert (hook.result.status, hook.result.attempts) == (200, 3)


async def test_retry_after_header_is_honoured(server: Recorder) -> None:
    """A 429 with Retry-After: 0.3 waits at least that long before the next attempt."""
    server.fail_times = 1
    server.fail_status = 429
    server.fail_headers = {"Retry-After": "0.3"}
    coordinator = fast()
    notify(coordinator, server.url, backoff=0.01)
    report = await coordinator.shutdown()
    assert report.ok, report.to_dict()
    first, second = server.received
    assert second.at - first.at >= 0.29


async def test_gives_up_after_the_last_retry_with_a_clear_error(server: Recorder) -> None:
    """Always 502: 1 + retries attempts, then the handler fails with the status and count."""
    server.fail_times = 100
    server.fail_status = 502
    coordinator = fast()
    hook = notify(coordinator, f"{server.url}/hook?token=abc", retries=2, backoff=0.01)

    report = await coordinator.shutdown()

    assert len(server.received) == 3
    [result] = report.handlers
    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert result.error.startswith("WebhookError: POST http://127.0.0.1:")
    assert "failed after 3 attempts: answered 502 Bad Gateway" in result.error
    assert "(x3)" in result.error
    assert "token=abc" not in result.error  # the query string is not logged
    assert hook.result is not None
    assert (hook.result.status, hook.result.attempts, hook.result.ok) == (502, 3, False)


async def test_the_handler_raises_webhook_error_when_called_directly(server: Recorder) -> None:
    """Called outside a shutdown (its own tests, a manual run), a failure is a WebhookError."""
    server.fail_times = 1
    server.fail_status = 400
    hook = notify(fast(), server.url)
    ctx = ShutdownContext(
        reason="test",
        phase=Phase.ANNOUNCE,
        deadline=time.monotonic() + 2,
        logger=logging.getLogger("graceshut"),
    )
    with pytest.raises(WebhookError, match="answered 400 Bad Request"):
        await hook(ctx)
    await hook(ctx)  # the next answer is 200
    assert hook.result is not None
    assert hook.result.ok


async def test_client_errors_are_not_retried(server: Recorder) -> None:
    """A 404 is final: one request, and the error quotes the answer."""
    server.fail_times = 100
    server.fail_status = 404
    coordinator = fast()
    notify(coordinator, server.url, retries=5, backoff=0.01)
    report = await coordinator.shutdown()
    assert len(server.received) == 1
    assert report.handlers[0].outcome is Outcome.ERROR
    assert "answered 404 Not Found" in str(report.handlers[0].error)


async def test_server_down_fails_within_timeout_while_others_in_the_phase_run() -> None:
    """Connection refused: the webhook errors before its timeout; a sibling handler is ok."""
    coordinator = fast()
    notify(coordinator, closed_port_url(), timeout=3, retries=3, backoff=0.02, name="lb")
    ran: list[str] = []

    @coordinator.on_shutdown(Phase.ANNOUNCE, name="sibling")
    async def sibling() -> None:
        await anyio.sleep(0.1)
        ran.append("sibling")

    report = await coordinator.shutdown()

    results = {r.name: r for r in report.handlers}
    # An error, not a timeout: it gave up on its own before its 3 s.
    assert results["lb"].outcome is Outcome.ERROR
    assert "failed after 4 attempts: ConnectError" in str(results["lb"].error)
    assert results["lb"].duration < 3
    assert results["sibling"].outcome is Outcome.OK
    assert ran == ["sibling"]


async def test_hanging_server_is_cut_off_at_the_handler_timeout(server: Recorder) -> None:
    """A server that never answers: the handler times out at its timeout, not later."""
    server.hang = True
    coordinator = fast()
    hook = notify(coordinator, server.url, timeout=0.5, attempt_timeout=5)

    report = await coordinator.shutdown()

    [result] = report.handlers
    assert result.outcome is Outcome.TIMEOUT
    assert 0.45 <= result.duration < 5, "cut at its 0.5 s timeout, not at attempt_timeout"
    assert hook.result is not None
    assert hook.result.attempts == 1
    assert "cut off at the deadline" in str(hook.result.error)


async def test_slow_attempts_are_retried_within_the_budget(server: Recorder) -> None:
    """attempt_timeout shorter than timeout: each hung attempt ends and the next starts."""
    server.hang = True
    coordinator = fast()
    # 5 s for three attempts of 0.2 s: room for a loaded machine, where 2 s fitted only two.
    notify(coordinator, server.url, timeout=5, attempt_timeout=0.2, retries=2, backoff=0.01)

    report = await coordinator.shutdown()

    [result] = report.handlers
    assert result.outcome is Outcome.ERROR
    assert len(server.received) == 3
    assert "no answer within 0.2s (x3)" in str(result.error)
    assert result.duration < 5, "three attempts ended within the handler's timeout"


async def test_no_retry_is_started_that_would_overrun_the_deadline() -> None:
    """A backoff longer than what is left ends the handler early, saying why."""
    coordinator = fast()
    notify(coordinator, closed_port_url(), timeout=1, retries=5, backoff=2)

    report = await coordinator.shutdown()

    [result] = report.handlers
    # An error before its 1 s timeout: it did not sleep into the deadline.
    assert result.outcome is Outcome.ERROR
    assert result.duration < 1
    assert "failed after 1 attempt:" in str(result.error)
    assert "no time left for a retry before the deadline" in str(result.error)


async def test_answer_is_logged_with_structured_fields(
    server: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """The success line carries status, attempts, duration and the URL without secrets."""
    coordinator = fast()
    notify(coordinator, f"http://user:pw@127.0.0.1:{server.url.rsplit(':', 1)[1]}/x?k=v")
    with caplog.at_level(logging.INFO, logger="graceshut"):
        await coordinator.shutdown()
    [record] = [r for r in caplog.records if r.getMessage().startswith("webhook ")]
    fields = record.__dict__
    assert fields["outcome"] == "ok"
    assert fields["status"] == 200
    assert fields["attempts"] == 1
    assert fields["duration"] > 0
    assert fields["phase"] == "announce"
    assert fields["url"] == f"{server.url}/x"
    assert "pw" not in record.getMessage()
    assert fields["handler"] == f"webhook POST {server.url}/x"


async def test_a_client_passed_in_is_used_and_left_open(server: Recorder) -> None:
    """With client=, requests go through it (its headers apply) and it stays usable."""
    async with httpx.AsyncClient(headers={"X-From": "mine"}) as client:
        coordinator = fast()
        notify(coordinator, server.url, client=client)
        report = await coordinator.shutdown()
        assert report.ok
        assert server.received[0].headers["x-from"] == "mine"
        assert not client.is_closed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "not a url"}, "absolute http"),
        ({"url": "ftp://example.com/x"}, "absolute http"),
        ({"url": "http://x", "retries": -1}, "retries"),
        ({"url": "http://x", "attempt_timeout": 0}, "attempt_timeout"),
        ({"url": "http://x", "backoff": float("nan")}, "backoff"),
        ({"url": "http://x", "phase": "later"}, "unknown phase"),
        ({"url": "http://x", "timeout": 60}, "longer than the whole shutdown budget"),
    ],
)
def test_bad_arguments_are_refused_at_registration(kwargs: dict[str, object], match: str) -> None:
    """Mistakes show when the app starts, not when it is shutting down."""
    with pytest.raises(ValueError, match=match):
        notify(fast(), **kwargs)  # type: ignore[arg-type]


async def test_payload_builder_gets_the_context(server: Recorder) -> None:
    """The builder is called with the ShutdownContext of the announce phase."""
    seen: list[ShutdownContext] = []

    def build(ctx: ShutdownContext) -> dict[str, str]:
        seen.append(ctx)
        return {"why": ctx.reason}

    coordinator = fast()
    notify(coordinator, server.url, json=build)
    await coordinator.shutdown("prestop")
    assert seen[0].phase is Phase.ANNOUNCE
    assert server.received[0].json() == {"why": "prestop"}
