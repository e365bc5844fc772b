"""What a real Prometheus sees of a shutdown by scraping, against what a push keeps.

Debian's Prometheus scrapes the app's admin listener every 1, 5 and 15 s while the e2e
app (tests/e2e/app.py: a propagation delay of 1 s, a drain of 3 s) is stopped with
SIGTERM; its final numbers are pushed to Debian's Pushgateway. Counts the raw samples
Prometheus stored. Run from the repository root in the project's virtualenv, with
``prometheus`` and ``prometheus-pushgateway`` installed (scripts/system-deps):

    python benchmarks/scrape_vs_push.py           # prints the table
    python benchmarks/scrape_vs_push.py --write   # and writes it into docs/observability.md
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.asgi_servers import Server, free_port  # noqa: E402 - the suite's harness
from tests.e2e._prometheus import Prometheus, Pushgateway  # noqa: E402

DOC = ROOT / "docs" / "observability.md"
START, END = "<!-- scrape_vs_push:start -->", "<!-- scrape_vs_push:end -->"


def raw_samples(prometheus: Prometheus, query: str, at: float) -> list[float]:
    """The values Prometheus stored for *query* in the 3 minutes before *at*."""
    answer = httpx.get(
        f"{prometheus.url}/api/v1/query", params={"query": f"{query}[3m]", "time": at}, timeout=10
    ).json()
    return [float(v) for series in answer["data"]["result"] for _, v in series["values"]]


def measure(interval: int) -> str:
    admin_port = free_port()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Pushgateway() as gateway,
        Prometheus([f"127.0.0.1:{admin_port}"], interval=interval) as prometheus,
    ):
        port = free_port()
        env = {
            "E2E_METRICS": "1",
            "E2E_PUSHGATEWAY": gateway.url,
            "GRACESHUT_ADMIN_ADDRESS": f"127.0.0.1:{admin_port}",
            "GRACESHUT_GRACE_PERIOD": "20",
            "GRACESHUT_PROPAGATION_DELAY": "1",
            "E2E_SLOW": "drain=3",
        }
        argv = [sys.executable, "-m", "uvicorn", "tests.e2e.app:app", "--port", str(port)]
        server = Server(argv, port, Path(tmp) / "app.events", env)
        try:
            prometheus.wait_scraped(timeout=interval * 3 + 20)
            time.sleep(interval / 2)  # half-way between two scrapes (give or take a poll)
            sent = time.monotonic()
            server.signal(signal.SIGTERM)
            status = server.wait_exit()
            took = time.monotonic() - sent
        finally:
            server.stop()
        time.sleep(interval + 1)
        now = time.time()
        stopping = sum(1 for v in raw_samples(prometheus, "graceshut_shutting_down", now) if v)
        drain = sum(1 for v in raw_samples(prometheus, 'graceshut_phase{phase="drain"}', now) if v)
        final = len(raw_samples(prometheus, "graceshut_shutdown_ok", now))
        pushed = any(
            line.startswith("graceshut_shutdown_ok{") for line in gateway.metrics().splitlines()
        )
    return (
        f"| {interval} s | {took:.1f} s (exit {status}) | {stopping} | {drain} | {final} | "
        f"{'yes' if pushed else 'no'} |"
    )


def main() -> None:
    header = (
        "| scrape interval | shutdown (SIGTERM to exit) | scrapes during the shutdown "
        "| of them in the drain | scrapes with the final numbers | final numbers pushed |"
    )
    rows = [header, "|---|---|---|---|---|---|"]
    for interval in (1, 5, 15):
        rows.append(measure(interval))
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    if "--write" in sys.argv:
        text = DOC.read_text()
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        note = (
            "Measured by `python benchmarks/scrape_vs_push.py --write` on "
            f"{time.strftime('%Y-%m-%d')} (Prometheus and Pushgateway from Debian; one "
            "shutdown per interval, SIGTERM about half-way between two scrapes):"
        )
        DOC.write_text(f"{head}{START}\n{note}\n\n{table}\n{END}{tail}")


if __name__ == "__main__":
    main()
