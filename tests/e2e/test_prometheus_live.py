"""graceshut's metrics in a real Prometheus (scraping every second) and a real Pushgateway."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from ..asgi_servers import Server, free_port
from ._prometheus import Prometheus, Pushgateway

pytestmark = pytest.mark.e2e


def test_prometheus_sees_the_drain_and_the_pushgateway_gets_the_last_numbers(
    start_server: Callable[..., Server],
) -> None:
    """Scrapes every 1 s show the drain as it happens; the final numbers arrive by push."""
    admin_port = free_port()
    with Pushgateway() as gateway, Prometheus([f"127.0.0.1:{admin_port}"]) as prometheus:
        server = start_server(
            "uvicorn",
            {
                "E2E_METRICS": "1",
                "E2E_PUSHGATEWAY": gateway.url,
                "GRACESHUT_ADMIN_ADDRESS": f"127.0.0.1:{admin_port}",
                "GRACESHUT_PROPAGATION_DELAY": "1",
                "E2E_SLOW": "drain=3",  # a drain of 3 s: three scrapes or so
            },
        )
        prometheus.wait_scraped()
        began = time.time()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(httpx.get, f"{server.url}/slow?seconds=2", timeout=10)
            time.sleep(0.3)
            server.signal(signal.SIGTERM)
            assert server.wait_exit() == 0, server.output()
            assert slow.result().status_code == 200
        ended = time.time()
        time.sleep(1.5)  # the scrape that finds the port closed marks the series stale

        def series(query: str) -> list[tuple[float, float]]:
            return [(at, float(v)) for at, v in prometheus.query_range(query, began, ended)]

        draining = [at for at, v in series('graceshut_phase{phase="drain"}') if v == 1]
        assert draining, "no scrape saw the drain"
        stopping = [at for at, v in series("graceshut_shutting_down") if v == 1]
        assert stopping, "no scrape saw the shutdown"
        assert min(stopping) <= min(draining), "the trigger shows before the drain"
        busy = [at for at, v in series("graceshut_in_flight") if v >= 1]
        assert any(at in stopping for at in busy), "the request in flight was seen draining"

        pushed = gateway.metrics()
        assert 'graceshut_shutdown_ok{instance="' in pushed, pushed
        (ok_line,) = [
            line for line in pushed.splitlines() if line.startswith("graceshut_shutdown_ok{")
        ]
        assert 'job="graceshut"' in ok_line
        assert 'reason="SIGTERM"' in ok_line
        assert ok_line.endswith(" 1"), ok_line
        assert 'graceshut_handler_outcomes_total{handler="e2e-drain"' in pushed
