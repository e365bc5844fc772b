"""What the webhook, metrics and termination-message integrations cost at shutdown.

Runs each against a local HTTP server on 127.0.0.1 and prints medians over many runs:

    python benchmarks/contrib_shutdown_costs.py [asyncio|trio]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
from prometheus_client import CollectorRegistry, generate_latest

import graceshut
from graceshut.contrib.prometheus import instrument
from graceshut.contrib.termination import write_termination_message
from graceshut.contrib.webhook import notify

RUNS = 200


class Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    do_POST = do_PUT = _answer  # noqa: N815 - http.server's names

    def log_message(self, *args):
        pass


def coordinator() -> graceshut.Coordinator:
    return graceshut.Coordinator(grace_period=10, safety_margin=1, propagation_delay=0)


def ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[int(len(values) * 0.95) - 1]
    return f"median {statistics.median(values) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms"


async def main(url: str) -> None:
    # Registration: notify() makes its HTTP client up front.
    started = time.perf_counter()
    notify(coordinator(), url)
    first = (time.perf_counter() - started) * 1000
    print(f"notify() at startup, first call in the process: {first:.1f} ms")
    setup = []
    for _ in range(20):
        started = time.perf_counter()
        notify(coordinator(), url)
        setup.append(time.perf_counter() - started)
    print(f"notify() at startup, later calls: {ms(setup)}")

    webhook, push, termination, whole = [], [], [], []
    scrape = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(RUNS):
            c = coordinator()
            hook = notify(c, url)
            metrics = instrument(c, registry=CollectorRegistry(), push_gateway=url)
            write_termination_message(c, Path(tmp) / "termination-log")
            started = time.perf_counter()
            report = await c.shutdown()
            whole.append(time.perf_counter() - started)
            if not report.ok or hook.result is None or not hook.result.ok:
                raise RuntimeError(f"unexpected run: {report.to_dict()}")
            webhook.append(report.handlers[0].duration)
            # The push and the file write happen in report listeners; time them alone.
            started = time.perf_counter()
            metrics.push()
            push.append(time.perf_counter() - started)
            listener_path = Path(tmp) / f"t{i}"
            c2 = coordinator()
            write_termination_message(c2, listener_path)
            termination.append((await c2.shutdown()).duration)
            started = time.perf_counter()
            generate_latest(metrics.registry)
            scrape.append(time.perf_counter() - started)

    print(f"webhook handler (one POST to 127.0.0.1, 200): {ms(webhook)}")
    print(f"Pushgateway push (PUT to 127.0.0.1): {ms(push)}")
    print(f"whole shutdown with webhook + metrics push + termination message: {ms(whole)}")
    print(f"empty shutdown with only the termination message: {ms(termination)}")
    print(f"scrape of graceshut's metrics (generate_latest): {ms(scrape)}")


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"{backend}, Python {sys.version.split()[0]}, {RUNS} runs")
    anyio.run(main, f"http://127.0.0.1:{server.server_address[1]}", backend=backend)
