"""Added cost per request of graceshut's middleware, in-process (raw ASGI calls, no network).

Baselines in the same run: the bare app, and the counter a user would write today with
Starlette's BaseHTTPMiddleware. Prints the median of several rounds.

    python benchmarks/middleware_overhead.py [--requests N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response

import graceshut
from graceshut.asgi import GracefulShutdownMiddleware

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"bench")],
    "client": ("127.0.0.1", 1234),
    "server": ("127.0.0.1", 8000),
}
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
BODY = {"type": "http.response.body", "body": b"ok"}


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    await send(START)
    await send(BODY)


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Any) -> None:
    return None


class CountingMiddleware(BaseHTTPMiddleware):
    in_flight = 0

    async def dispatch(self, request: Request, call_next: Any) -> Response:
        CountingMiddleware.in_flight += 1
        try:
            return await call_next(request)
        finally:
            CountingMiddleware.in_flight -= 1


async def per_request(app: Any, requests: int) -> float:
    scope = SCOPE
    started = time.perf_counter()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - started) / requests


async def main(requests: int, rounds: int) -> None:
    coordinator = graceshut.Coordinator(environ={})
    graceshut_app = GracefulShutdownMiddleware(bare_app, coordinator)
    counting = Starlette()
    counting.add_middleware(CountingMiddleware)
    counting.router.routes.clear()

    async def counting_endpoint(scope: Any, receive: Any, send: Any) -> None:
        await bare_app(scope, receive, send)

    base_http = CountingMiddleware(counting_endpoint)
    apps = {"bare app": bare_app, "graceshut": graceshut_app, "BaseHTTPMiddleware": base_http}
    results: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            results[name].append(await per_request(app, requests))
    bare = statistics.median(results["bare app"])
    print(f"# middleware cost per request, {requests} requests x {rounds} rounds, median")
    print(f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}")
    print(f"{'app':<20} {'us/request':>11} {'added us':>9} {'ratio':>6}")
    for name, samples in results.items():
        value = statistics.median(samples)
        print(f"{name:<20} {value * 1e6:>11.3f} {(value - bare) * 1e6:>9.3f} {value / bare:>6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
