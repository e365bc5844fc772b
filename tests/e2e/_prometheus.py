"""Debian's Prometheus and Pushgateway, started for a test (scripts/system-deps installs them)."""

from __future__ import annotations

import shutil
import time
from typing import Any

import httpx

from ..contrib._servers import Server


def _binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: run scripts/system-deps"
    return found


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


class Pushgateway(Server):
    """``prometheus-pushgateway`` on a free port, in memory only."""

    name = "pushgateway"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            _binary("prometheus-pushgateway"),
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def ready(self) -> bool:
        return _answers(f"{self.url}/-/ready")

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text


class Prometheus(Server):
    """``prometheus`` scraping *targets* every *interval* s, its data in a temporary directory."""

    name = "prometheus"

    def __init__(self, targets: list[str], interval: int = 1) -> None:
        super().__init__()
        self.targets = targets
        self.interval = interval

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        config = self.dir / "prometheus.yml"
        listed = ", ".join(f'"{t}"' for t in self.targets)
        config.write_text(
            f"global: {{scrape_interval: {self.interval}s, scrape_timeout: 900ms, "
            "evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: app\n    static_configs: [{{targets: [{listed}]}}]\n"
        )
        return [
            _binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def ready(self) -> bool:
        return _answers(f"{self.url}/-/ready")

    def query_range(self, query: str, start: float, end: float) -> list[tuple[float, str]]:
        """Samples of *query* at 0.5 s steps (one series expected): [(time, value)]."""
        answer = httpx.get(
            f"{self.url}/api/v1/query_range",
            params={"query": query, "start": start, "end": end, "step": "0.5"},
            timeout=10,
        ).json()
        assert answer["status"] == "success", answer
        result: list[Any] = answer["data"]["result"]
        if not result:
            return []
        return [(float(at), value) for at, value in result[0]["values"]]

    def wait_scraped(self, timeout: float = 40.0) -> None:
        """Until every target has been scraped successfully once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            targets = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()
            active = targets["data"]["activeTargets"]
            if active and all(t["health"] == "up" for t in active):
                return
            time.sleep(0.2)
        raise AssertionError(f"prometheus never scraped its targets: {targets}")
