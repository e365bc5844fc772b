"""Notify a URL when the shutdown starts: load balancers, service discovery, webhooks.

Install with ``pip install 'graceshut[webhook]'``. `notify` registers an ``announce``
handler that sends one HTTP request with `httpx` (on asyncio and trio alike), retries
transport errors, timeouts and 5xx answers with backoff, never past the handler's
deadline, and logs the answer. After the last attempt it fails with an error that says
what happened, which the `~graceshut.ShutdownReport` records::

    from graceshut.contrib.webhook import notify

    notify(coordinator, "http://lb-agent:8080/deregister")
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .._core._phases import Phase
from .._core._pod import pod_name
from ._errors import IntegrationError
from .spill import ReplayResult, SpillDirectory, SpillFallback, SpillTarget

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "graceshut.contrib.webhook needs httpx: pip install 'graceshut[webhook]'"
    ) from exc

from ._webhook_attempts import (
    MAX_BACKOFF,
    Attempt,
    attempts_text,
    describe,
    redact,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from .._core._context import ShutdownContext
    from .._core._coordinator import Coordinator

__all__ = [
    "RETRY_STATUSES",
    "Webhook",
    "WebhookError",
    "WebhookResult",
    "default_payload",
    "notify",
    "pod_name",
]

logger = logging.getLogger("graceshut")

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers worth another attempt: the server (or a proxy before it) may do better soon."""
_EXCERPT = 200


def default_payload(ctx: ShutdownContext) -> dict[str, Any]:
    """The JSON body `notify` sends unless told otherwise.

    ``{"event": "shutdown", "reason": ..., "pod": ..., "pid": ...}``, where ``pod`` is
    ``POD_NAME`` (set it from the downward API), else ``HOSTNAME`` (the pod name in
    Kubernetes), else the host name.

    Example::

        notify(coordinator, url, json=lambda ctx: {**default_payload(ctx), "zone": ZONE})
    """
    return {"event": "shutdown", "reason": ctx.reason, "pod": pod_name(), "pid": os.getpid()}


class WebhookError(IntegrationError):
    """The URL did not answer with 2xx: the message says how each attempt ended."""


@dataclasses.dataclass(frozen=True)
class WebhookResult:
    """How the last notification went.

    Attributes:
        status: The HTTP status of the last answer, or None when none came.
        attempts: Requests sent (or tried).
        duration: Seconds from the first attempt to the end of the last one.
        error: Why it failed, or None when the answer was 2xx.
    """

    status: int | None
    attempts: int
    duration: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the URL answered with a 2xx status."""
        return self.error is None


class Webhook:
    """The ``announce`` handler that `notify` registers; call `notify` rather than this.

    Attributes:
        url: Where the request goes.
        name: The handler's name in logs and the report.
        result: How the last run went, once it ran (None before).
        spill: Where a notification that failed goes, or None.
        fallback: The fallback that spills it (registered with the handler), or None.
    """

    def __init__(
        self,
        url: str,
        *,
        method: str,
        json: Any,
        headers: Mapping[str, str] | None,
        retries: int,
        backoff: float,
        attempt_timeout: float,
        client: httpx.AsyncClient | None,
        name: str,
        spill: SpillTarget | None = None,
    ) -> None:
        self.url = url
        self.method = method
        self.name = name
        self.result: WebhookResult | None = None
        self._json = json
        self._headers = dict(headers or {})
        self._retries = retries
        self._backoff = backoff
        self._attempt_timeout = attempt_timeout
        self._client = client
        # Made now, at startup: a new client loads the CA bundle, which takes some
        # 100 ms that the announce phase should not spend. Closed after each run.
        self._spare: httpx.AsyncClient | None = _new_client() if client is None else None
        self._safe_url = redact(url)
        self.spill = spill
        self._unsent: list[dict[str, Any]] = []
        self.fallback = (
            None if spill is None else SpillFallback(spill, name, self._take, "requests")
        )

    async def __call__(self, ctx: ShutdownContext) -> None:
        """Send the request, retrying within *ctx*'s deadline; raise `WebhookError` on failure."""
        body = self._json(ctx) if callable(self._json) else self._json
        sent_at = dt.datetime.now(dt.timezone.utc).isoformat()
        self._unsent = [{"method": self.method, "json": body, "at": sent_at}]
        if self._client is not None:
            await self._send(self._client, body, ctx)
            return
        client, self._spare = self._spare or _new_client(), None
        async with client:
            await self._send(client, body, ctx)

    async def replay(self) -> ReplayResult:
        """Send the notifications a failed shutdown spilled, once each, then remove them.

        For notices that still mean something later (an audit trail, a billing event);
        a deregistration sent after the pod came back would do harm: spill none of
        those. Each goes to this webhook's URL with its headers, one attempt each.

        Raises:
            TypeError: The webhook has no `~graceshut.contrib.spill.SpillDirectory`.
            graceshut.contrib.spill.SpillReplayError: A request failed; its file stays.
        """
        spill = self.spill
        if not isinstance(spill, SpillDirectory):
            raise TypeError(f"{self.name}: replay needs spill=SpillDirectory(...), got {spill!r}")

        async def send(records: list[dict[str, Any]]) -> None:
            client = self._client or _new_client()
            try:
                for record in records:
                    attempt = await self._attempt(client, record["json"])
                    if attempt.failure is not None:
                        raise WebhookError(f"{self.method} {self._safe_url}: {attempt.failure}")
            finally:
                if self._client is None:
                    await client.aclose()

        return await spill.replay(self.name, send, batch_size=100)

    async def _take(self, ctx: ShutdownContext) -> list[dict[str, Any]]:
        del ctx  # the request that failed: nothing else is held
        unsent, self._unsent = self._unsent, []
        return unsent

    async def _send(self, client: httpx.AsyncClient, body: Any, ctx: ShutdownContext) -> None:
        started = time.monotonic()
        attempts: list[Attempt] = []  # those that ended
        tried = 0  # those that started: the last one may be cut off
        fields: dict[str, Any] = {
            "phase": ctx.phase.value,
            "handler": self.name,
            "method": self.method,
            "url": self._safe_url,
        }

        def record(note: str | None = None) -> WebhookResult:
            error = (
                None
                if note is None
                else describe(self.method, self._safe_url, tried, attempts, note)
            )
            status = attempts[-1].status if attempts else None
            self.result = WebhookResult(status, tried, time.monotonic() - started, error)
            fields.update(status=status, attempts=tried, duration=self.result.duration)
            fields.update(remaining=ctx.remaining(), outcome="ok" if error is None else "error")
            return self.result

        try:
            while True:
                tried += 1
                attempt = await self._attempt(client, body)
                attempts.append(attempt)
                if attempt.failure is None:
                    self._unsent = []
                    result = record()
                    logger.info(
                        "webhook %s: %s %s answered %s after %s in %.3fs",
                        self.name,
                        self.method,
                        self._safe_url,
                        result.status,
                        attempts_text(result.attempts),
                        result.duration,
                        extra=fields,
                    )
                    return
                note = ""
                delay = self._delay(len(attempts), attempt.retry_after)
                if not attempt.retryable or len(attempts) > self._retries:
                    break
                if delay >= ctx.remaining():
                    note = "no time left for a retry before the deadline"
                    break
                logger.info(
                    "webhook %s: attempt %d failed (%s), retrying in %.2fs",
                    self.name,
                    len(attempts),
                    attempt.failure,
                    delay,
                    extra={**fields, "status": attempt.status, "attempts": len(attempts)},
                )
                await anyio.sleep(delay)
        except anyio.get_cancelled_exc_class():
            result = record("cut off at the deadline")
            logger.warning("webhook %s: %s", self.name, result.error, extra=fields)
            raise
        result = record(note)
        logger.warning("webhook %s: %s", self.name, result.error, extra=fields)
        raise WebhookError(result.error)

    async def _attempt(self, client: httpx.AsyncClient, body: Any) -> Attempt:
        timeout = self._attempt_timeout
        try:
            with anyio.fail_after(timeout):
                response = await client.request(
                    self.method, self.url, json=body, headers=self._headers, timeout=timeout
                )
        except TimeoutError:
            return Attempt(None, f"no answer within {timeout:g}s", retryable=True)
        except httpx.TransportError as exc:
            text = str(exc) or "transport error"
            return Attempt(None, f"{type(exc).__name__}: {text}", retryable=True)
        status = response.status_code
        if response.is_success:
            return Attempt(status, None)
        failure = f"answered {status} {response.reason_phrase}".rstrip()
        excerpt = response.text[:_EXCERPT].strip()
        if excerpt:
            failure += f" {excerpt!r}"
        return Attempt(
            status,
            failure,
            retryable=status in RETRY_STATUSES,
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )

    def _delay(self, attempts: int, retry_after: float) -> float:
        return max(min(self._backoff * 2.0 ** (attempts - 1), MAX_BACKOFF), retry_after)


def notify(
    coordinator: Coordinator,
    url: str,
    *,
    method: str = "POST",
    json: Any = default_payload,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    retries: int = 2,
    backoff: float = 0.2,
    attempt_timeout: float = 2.0,
    client: httpx.AsyncClient | None = None,
    name: str | None = None,
    phase: Phase | str = Phase.ANNOUNCE,
    spill: SpillTarget | None = None,
) -> Webhook:
    """Send a request to *url* when *coordinator*'s shutdown starts (``announce`` phase).

    2xx is success. Transport errors, timeouts and 408/425/429/5xx answers are retried
    after ``backoff``, doubling each time (or the answer's ``Retry-After``, if longer),
    as long as the wait fits before the deadline; other answers fail at once. The handler
    never runs past its deadline: the earlier of *timeout* and what the later phases need.

    Args:
        coordinator: The coordinator to register with.
        url: An ``http://`` or ``https://`` URL. Its query string and credentials are
            left out of logs: pass secrets in *headers* rather than the URL.
        method: The HTTP method.
        json: The JSON body: a callable taking the `~graceshut.ShutdownContext`, a value
            sent as is, or None for no body. Default: `default_payload`.
        headers: Extra request headers (``Authorization``...).
        timeout: Seconds for the whole notification, retries included.
        retries: Attempts after the first one.
        backoff: Seconds before the first retry; doubles after each, up to 5 s.
        attempt_timeout: Seconds one attempt may take.
        client: An `httpx.AsyncClient` to send with (for TLS, proxies, auth). A client
            you pass is not closed. By default one is made here (loading the CA bundle
            takes some 100 ms, better spent at startup than at shutdown) and closed after
            the run.
        name: The handler's name in logs and the report; default
            ``"webhook <METHOD> <url>"``.
        phase: The phase to notify in: ``announce`` by default, as early as possible;
            ``report`` for a "stopped" notice once the work is done.
        spill: Where the notification goes when every attempt failed: a
            `~graceshut.contrib.spill.SpillDirectory` (`Webhook.replay` sends it at the
            next start) or a `~graceshut.contrib.spill.SpillLog`. For notices that
            still matter later, not for a deregistration.

    Returns:
        The registered handler; its `~Webhook.result` says how the last run went.

    Raises:
        ValueError: A bad URL, or numbers out of range.

    Example::

        notify(
            coordinator,
            "https://discovery.internal/v1/deregister",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=3,
        )
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"notify(url={url!r}): not a valid URL: {exc}") from None
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise ValueError(f"notify(url={url!r}): expected an absolute http:// or https:// URL")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"notify(retries={retries!r}): expected an integer, 0 or more")
    if not backoff >= 0:  # also refuses NaN
        raise ValueError(f"notify(backoff={backoff!r}): expected seconds, 0 or more")
    if not attempt_timeout > 0:
        raise ValueError(f"notify(attempt_timeout={attempt_timeout!r}): expected seconds above 0")
    method = method.upper()
    webhook = Webhook(
        url,
        method=method,
        json=json,
        headers=headers,
        retries=retries,
        backoff=backoff,
        attempt_timeout=attempt_timeout,
        client=client,
        name=name or f"webhook {method} {redact(url)}",
        spill=spill,
    )
    coordinator.add_handler(
        webhook, phase=phase, timeout=timeout, name=webhook.name, fallback=webhook.fallback
    )
    return webhook


def _new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(follow_redirects=False)
