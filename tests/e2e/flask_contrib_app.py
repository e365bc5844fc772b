"""A Flask app using every ready-made handler that has a sync form, for the WSGI e2e test.

E2E_DB: SQLite file for the write-behind buffer. E2E_REDIS_PORT: the Redis for the lock
and the cache. E2E_WEBHOOK: the URL notified at announce.
"""

from __future__ import annotations

import logging
import os
import sys

import redis
import sqlalchemy as sa
from flask import Flask, request

import graceshut
import graceshut.flask
from graceshut.contrib.cache import flush_mapping
from graceshut.contrib.redis import RedisLocks
from graceshut.contrib.sqlalchemy import WriteBehindBuffer, dispose_engine
from graceshut.contrib.webhook import notify

logging.basicConfig(
    level=logging.INFO,
    stream=sys.stderr,
    format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
)

app = Flask(__name__)
coordinator = graceshut.Coordinator()

engine = sa.create_engine(f"sqlite:///{os.environ['E2E_DB']}")
metadata = sa.MetaData()
events_table = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("pid", sa.Integer),
    sa.Column("n", sa.Integer),
)
events = WriteBehindBuffer(coordinator, engine, events_table)
dispose_engine(coordinator, engine)

client = redis.Redis(port=int(os.environ["E2E_REDIS_PORT"]))
locks = RedisLocks(coordinator)
prices: dict[str, str] = {}


def to_redis(batch: dict[str, str]) -> None:
    client.mset({f"price:{key}": value for key, value in batch.items()})


flush_mapping(coordinator, prices, to_redis)
notify(coordinator, os.environ["E2E_WEBHOOK"], timeout=3)


@app.get("/event")
def event() -> str:
    events.append({"pid": os.getpid(), "n": int(request.args["n"])})
    return "buffered"


@app.get("/lock")
def lock() -> str:
    """Take a lock for a long job and keep it: the shutdown must release it."""
    held = locks.lock(client, f"job:{request.args['n']}", ttl=60)
    held.acquire(blocking=False)
    return str(os.getpid())


@app.get("/price")
def price() -> str:
    prices[request.args["key"]] = request.args["value"]
    return "cached"


graceshut.flask.install(app, coordinator)
