"""What reaches an OTLP collector, and when the process exits, when a traced app is stopped.

The setups of docs/observability.md: a Starlette app traced by the OpenTelemetry SDK
(``BatchSpanProcessor`` + OTLP/HTTP exporter, tests/e2e/otel_app.py) under uvicorn or
gunicorn with the uvicorn worker, a collector on 127.0.0.1 that answers, hangs (accepts,
never answers) or is refused; 50 requests, then SIGTERM. Run from the repository root
in the project's virtualenv (the test extra: opentelemetry-exporter-otlp-proto-http,
opentelemetry-proto):

    python benchmarks/exit_telemetry.py           # prints the table
    python benchmarks/exit_telemetry.py --write   # and writes it into docs/observability.md
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "observability.md"
START, END = "<!-- exit_telemetry:start -->", "<!-- exit_telemetry:end -->"
REQUESTS = 50


class Collector:
    """OTLP/HTTP on 127.0.0.1: counts the spans it receives; may hang instead of answering."""

    def __init__(self, *, hang: bool) -> None:
        self.names: list[str] = []
        self.hang = hang
        self.release = threading.Event()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if collector.hang:
                    collector.release.wait(120)
                    return
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    collector.names += [
                        span.name
                        for rs in request.resource_spans
                        for ss in rs.scope_spans
                        for span in ss.spans
                    ]
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(server: str, collector: str, env: dict[str, str]) -> tuple[int, float, str]:
    """One run: (exit status, seconds from SIGTERM to exit, spans of the requests seen)."""
    sink = None if collector == "refused" else Collector(hang=collector == "hangs")
    url = sink.url if sink else f"http://127.0.0.1:{free_port()}"
    port = free_port()
    argv = {
        "uvicorn": ["-m", "uvicorn", "tests.e2e.otel_app:app", "--port", str(port)],
        "gunicorn": [
            "-m", "gunicorn", "tests.e2e.otel_app:app", "-k", "uvicorn_worker.UvicornWorker",
            "-b", f"127.0.0.1:{port}", "--graceful-timeout", "60",
            "-c", "python:graceshut.gunicorn",
        ],
    }[server]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "E2E_OTLP": url, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get("/work", params={"n": -1})
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the app did not start in 30 s") from None
                    time.sleep(0.05)
            for n in range(REQUESTS):
                client.get("/work", params={"n": n})
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(120)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if sink:
            sink.close()
    names = sink.names if sink else []
    seen = max(0, names.count("work") - 1)  # the warm-up request is not counted
    trace = " + shutdown trace" if "graceshut.shutdown" in names else ""
    return status, took, f"{seen} of {REQUESTS}{trace}"


SETUPS: list[tuple[str, str, str, dict[str, str]]] = [
    ("uvicorn, no graceshut", "uvicorn", "answers", {"E2E_GRACESHUT": "0"}),
    (
        "uvicorn + graceshut (grace 10 s), no contrib.otel",
        "uvicorn",
        "answers",
        {"GRACESHUT_GRACE_PERIOD": "10", "E2E_OTEL_INSTRUMENT": "0"},
    ),
    ("uvicorn + graceshut + contrib.otel (grace 10 s)", "uvicorn", "answers", {}),
    (
        "gunicorn + uvicorn worker + graceshut + contrib.otel (grace 10 s)",
        "gunicorn",
        "answers",
        {},
    ),
    (
        "uvicorn + graceshut (grace 10 s), no contrib.otel, collector hangs (timeout 10 s)",
        "uvicorn",
        "hangs",
        {"E2E_OTEL_INSTRUMENT": "0"},
    ),
    (
        "uvicorn + graceshut + contrib.otel (grace 10 s), collector hangs (exporter timeout 10 s)",
        "uvicorn",
        "hangs",
        {},
    ),
    (
        "uvicorn + graceshut + contrib.otel (grace 6 s), collector hangs (exporter timeout 30 s)",
        "uvicorn",
        "hangs",
        {"GRACESHUT_GRACE_PERIOD": "6", "E2E_OTLP_TIMEOUT": "30"},
    ),
    (
        "uvicorn + graceshut + contrib.otel (grace 6 s), collector refuses connections",
        "uvicorn",
        "refused",
        {"GRACESHUT_GRACE_PERIOD": "6", "E2E_OTLP_TIMEOUT": "30"},
    ),
    (
        "gunicorn + uvicorn worker + graceshut + contrib.otel (grace 6 s), collector hangs",
        "gunicorn",
        "hangs",
        {"GRACESHUT_GRACE_PERIOD": "6", "E2E_OTLP_TIMEOUT": "30"},
    ),
]


def main() -> None:
    base = {"GRACESHUT_GRACE_PERIOD": "10", "GRACESHUT_PROPAGATION_DELAY": "0"}
    rows = [
        "| setup | exit status | exit after SIGTERM | spans that reached the collector |",
        "|---|---|---|---|",
    ]
    for label, server, collector, env in SETUPS:
        status, took, seen = measure(server, collector, {**base, **env})
        # Killed by a signal: shown as a shell (and `kubectl`) shows it, 128 + the signal.
        shown = f"{status}" if status >= 0 else f"{128 - status} ({signal.Signals(-status).name})"
        rows.append(f"| {label} | {shown} | {took:.2f} s | {seen} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    if "--write" in sys.argv:
        text = DOC.read_text()
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        note = (
            "Measured by `python benchmarks/exit_telemetry.py --write` on "
            f"{time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}, safety margin 1 s, "
            "propagation delay 0:"
        )
        DOC.write_text(f"{head}{START}\n{note}\n\n{table}\n{END}{tail}")


if __name__ == "__main__":
    main()
