"""The ready-made handlers' sync forms, in a Flask app under gunicorn, with real servers."""

from __future__ import annotations

import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa

from ..asgi_servers import Server, free_port
from ..contrib._http_recorder import Recorder, serving
from ..contrib._servers import RedisServer

pytestmark = pytest.mark.e2e

WORKERS = 2


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def webhook() -> Iterator[Recorder]:
    with serving() as recorder:
        yield recorder


def test_sync_handlers_flush_release_and_notify_from_a_flask_app(
    tmp_path: Path, redis_server: RedisServer, webhook: Recorder
) -> None:
    """Buffered rows written, locks released, cache flushed, webhook sent: in every worker."""
    database = tmp_path / "events.db"
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE events (id INTEGER PRIMARY KEY, pid INTEGER, n INTEGER)")
    engine.dispose()
    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn", "tests.e2e.flask_contrib_app:app",
        "-c", "python:graceshut.gunicorn", "-k", "gthread", "-w", str(WORKERS),
        "--threads", "4", "-b", f"127.0.0.1:{port}",
    ]  # fmt: skip
    env = {
        "GRACESHUT_GRACE_PERIOD": "15",
        "GRACESHUT_PROPAGATION_DELAY": "0.5",
        "E2E_DB": str(database),
        "E2E_REDIS_PORT": str(redis_server.port),
        "E2E_WEBHOOK": f"{webhook.url}/deregister",
    }
    server = Server(argv, port, tmp_path / "contrib.events", env)
    client = redis.Redis(port=redis_server.port)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            holders: set[str] = set()
            for n in range(60):
                assert http.get("/event", params={"n": n}).status_code == 200
                http.get("/price", params={"key": f"k{n}", "value": str(n)})
                # New connections: the kernel spreads them over the workers.
                holders.add(httpx.get(f"{server.url}/lock?n={n}", timeout=10).text)
        assert len(holders) == WORKERS, "every worker holds locks"
        assert client.exists(*(f"job:{n}" for n in range(60))) == 60
        with sqlite3.connect(database) as db:
            assert db.execute("SELECT count(*) FROM events").fetchone() == (0,), "buffered"
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0, server.output()
        output = server.output()
    finally:
        server.stop()
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT n FROM events ORDER BY n").fetchall()
    assert [n for (n,) in rows] == list(range(60)), "every buffered row written at flush"
    assert client.exists(*(f"job:{n}" for n in range(60))) == 0, "every lock released"
    assert sorted(int(v) for v in client.mget([f"price:k{n}" for n in range(60)])) == list(
        range(60)
    ), "the cache reached Redis"
    notified = [r for r in webhook.received if r.path == "/deregister"]
    assert len(notified) == WORKERS, "each worker announced (per-process handler)"
    assert output.count("finished clean") == WORKERS, output
