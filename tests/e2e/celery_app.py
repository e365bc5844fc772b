"""The Celery app of the worker tests: one task that sleeps, ``acks_late`` on.

Each run of a task is written down in Redis (a database apart from the broker's), so
that the test can count how often each one started and finished, across workers.

Environment: ``CELERY_TEST_BROKER`` (the broker URL), ``CELERY_TEST_LEDGER`` (the
ledger's URL), ``CELERY_TEST_GRACESHUT=1`` to install graceshut (else a bare worker),
``CELERY_TEST_SLEEP_CAP`` to shorten every sleep (the second worker's re-runs),
``CELERY_TEST_REPORT`` where graceshut's report goes as JSON, ``CELERY_TEST_FLUSH_FAILS=1``
to make the flush handler fail.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import redis
from celery import Celery

app = Celery("celery_app", broker=os.environ["CELERY_TEST_BROKER"])
app.conf.update(
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)
ledger = redis.Redis.from_url(os.environ["CELERY_TEST_LEDGER"])
broker = redis.Redis.from_url(os.environ["CELERY_TEST_BROKER"])


@app.task(name="work.sleep")
def sleep(seconds: float, tag: str) -> str:
    """Sleep *seconds* (at most ``CELERY_TEST_SLEEP_CAP``), noting the start and the end."""
    cap = os.environ.get("CELERY_TEST_SLEEP_CAP")
    if cap:
        seconds = min(seconds, float(cap))
    ledger.rpush("started", tag)
    time.sleep(seconds)
    ledger.rpush("finished", tag)
    return tag


if os.environ.get("CELERY_TEST_GRACESHUT") == "1":
    import graceshut.celery
    from graceshut.contrib.termination import write_termination_message

    coordinator = graceshut.celery.install(app)
    write_termination_message(coordinator, os.environ["CELERY_TEST_REPORT"] + ".termination")

    @coordinator.on_shutdown("flush", timeout=1.0)
    def flush() -> None:
        """The app's flush, noting what the broker holds by then."""
        queued, unacked = broker.llen("celery"), broker.hlen("unacked")
        ledger.rpush("phases", f"flush queued={queued} unacked={unacked}")
        if os.environ.get("CELERY_TEST_FLUSH_FAILS") == "1":
            raise RuntimeError("the metrics buffer could not be written")

    @coordinator.on_shutdown("release", timeout=1.0)
    def release() -> None:
        """The app's release."""
        ledger.rpush("phases", "release")

    @coordinator.on_report
    def save(report: graceshut.ShutdownReport) -> None:
        """The report, for the test to read."""
        Path(os.environ["CELERY_TEST_REPORT"]).write_text(json.dumps(report.to_dict()))
