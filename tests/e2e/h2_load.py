"""Steady load from HTTP/2 clients (httpx, prior knowledge), counting every failed request.

Each client is one ``httpx.AsyncClient`` with one HTTP/2 connection, sending requests one
after the other at its share of the rate, never retrying on its own. httpx moves to a
new connection only when the server sends a GOAWAY (a request refused by one, above its
last stream, is retried on a new connection, as RFC 9113 allows). A request fails when it
raises or is answered with a 5xx.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any

import httpx


class Http2Load:
    """*clients* HTTP/2 clients sending *rate* requests per second to ``url`` in a thread."""

    def __init__(self, url: str, *, rate: float, clients: int, timeout: float = 5.0) -> None:
        self.url = url
        self.interval = clients / rate
        self.clients = clients
        self.timeout = timeout
        self.sent = 0
        self.ok = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self.samples: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def snapshot(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": sum(self.failures.values()),
            "failures": dict(self.failures),
        }

    async def _main(self) -> None:
        await asyncio.gather(*(self._client(i) for i in range(self.clients)))

    async def _client(self, index: int) -> None:
        await asyncio.sleep(self.interval * index / self.clients)
        async with httpx.AsyncClient(http1=False, http2=True, timeout=self.timeout) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                self.sent += 1
                try:
                    response = await client.get(self.url)
                except httpx.HTTPError as exc:
                    self._fail(type(exc).__name__, repr(exc))
                else:
                    if response.status_code >= 500:
                        self._fail(f"HTTP {response.status_code}", response.text[:100])
                    else:
                        self.ok += 1
                next_at += self.interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def _fail(self, kind: str, detail: str) -> None:
        self.failures[kind] += 1
        if len(self.samples) < 20:
            self.samples.append(f"{time.monotonic():.3f} {kind}: {detail}")
