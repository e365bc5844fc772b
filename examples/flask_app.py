"""A Flask app under gunicorn that buffers page views and saves them before it stops.

Run it (from the repository root)::

    gunicorn -c python:graceshut.gunicorn -k gthread -w 2 --threads 4 \\
        -b 0.0.0.0:8000 examples.flask_app:app

    curl localhost:8000/          # counted in memory
    curl localhost:8000/readyz    # 200, then 503 from the first trigger on

then ``kill -TERM <master pid>``: every worker fails readiness and keeps serving for the
propagation delay, drains, writes its buffered views to SQLite in the ``flush`` phase,
disposes its pool in ``release``, and gunicorn exits 0.

Settings: ``FLASK_DEMO_DATABASE`` (the SQLite file, ``flask_demo.sqlite3`` by default)
and the ``GRACESHUT_*`` variables of the coordinator.
"""

from __future__ import annotations

import logging
import os
import time

import sqlalchemy as sa
from flask import Flask, request

import graceshut
import graceshut.flask
from graceshut.contrib.sqlalchemy import WriteBehindBuffer, dispose_engine

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

app = Flask(__name__)
coordinator = graceshut.Coordinator()

engine = sa.create_engine(
    f"sqlite:///{os.environ.get('FLASK_DEMO_DATABASE', 'flask_demo.sqlite3')}"
)
metadata = sa.MetaData()
views = sa.Table(
    "views",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("path", sa.String(200)),
    sa.Column("pid", sa.Integer),
)
with engine.begin() as connection:  # every worker runs this at once: IF NOT EXISTS
    connection.execute(sa.schema.CreateTable(views, if_not_exists=True))

buffer = WriteBehindBuffer(coordinator, engine, views)  # `flush` phase
dispose_engine(coordinator, engine)  # `release` phase


@coordinator.on_shutdown("announce", once_per_pod=True)
def say_goodbye(ctx: graceshut.ShutdownContext) -> None:
    """Once per pod (not per worker): where a load balancer would be told."""
    ctx.logger.info("leaving the load balancer (reason: %s)", ctx.reason)


@app.get("/")
def home() -> str:
    buffer.append({"path": request.path, "pid": os.getpid()})
    return "hello\n"


@app.get("/slow")
def slow() -> str:
    time.sleep(float(request.args.get("seconds", "2")))
    buffer.append({"path": request.path, "pid": os.getpid()})
    return "slow hello\n"


graceshut.flask.install(app, coordinator)
