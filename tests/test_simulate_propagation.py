"""``graceshut simulate`` plays ``propagation_delay="auto"`` against its routers' lag."""

from __future__ import annotations

from pathlib import Path

import pytest

from .asgi_servers import free_port
from .test_simulate import FAST, TOKEN, demo_env, simulate, uvicorn


@pytest.mark.e2e
@pytest.mark.parametrize("lag", [0.5, 3.0])
def test_auto_ends_after_the_routers_stop_and_drops_nothing(tmp_path: Path, lag: float) -> None:
    """The delay outlasts the simulated routers' lag, ends on evidence, and nothing fails."""
    port = free_port()
    fast = [*FAST]
    fast[fast.index("--endpoint-lag") + 1] = str(lag)
    status, report, stderr = simulate(
        "--port",
        str(port),
        "--prestop-http",
        "/shutdown",
        "--prestop-header",
        f"Authorization: Bearer {TOKEN}",
        "--env",
        f"GRACESHUT_TOKEN={TOKEN}",
        *demo_env(tmp_path, propagation_delay="auto"),
        "--env",
        "GRACESHUT_PROPAGATION_CAP=10",
        *fast,
        *uvicorn("examples.app:app", port),
    )
    assert status == 0, (report["problems"], stderr, report["app_output_tail"])
    assert report["requests"]["failed"] == 0, report["requests"]
    app = report["app_report"]
    assert app["propagation"] == "evidence", app
    step = next(p for p in app["phases"] if p["name"] == "propagation")
    assert step["started"] + step["duration"] >= lag, app
