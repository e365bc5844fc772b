"""A broker that answers slowly while the worker hands its tasks back.

The hand-back (kombu's ``restore_unacked_once``: a transaction per message) starts a
second before the drain's end. When the broker's answers come late it runs past that
end: the sequence waits for it, a moment, so that the report still names every task
given back.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import redis

from ..contrib._servers import RedisServer, Relay
from .test_celery import HANDED_BACK, Kubelet, Worker, broker, secret_dir, send_tasks, wait_started

__all__ = ["broker", "secret_dir"]  # the fixtures, shared

pytestmark = pytest.mark.e2e

#: Each answer of the broker this late once the drain is under way (a busy Redis, a
#: congested network): the hand-back's 18 round trips then take about 1 s more.
ANSWER_DELAY = 0.06


@pytest.mark.usefixtures("secret_dir")
def test_a_slow_broker_at_the_hand_back_still_gets_every_task_named(
    broker: RedisServer, tmp_path: Path
) -> None:
    """Answers held back once the drain began: the report names every task handed back."""
    direct = f"redis://127.0.0.1:{broker.port}"
    ledger = redis.Redis.from_url(f"{direct}/1")
    store = redis.Redis.from_url(f"{direct}/0")
    link = Relay(broker.port)
    worker = Worker(
        tmp_path, f"redis://127.0.0.1:{link.port}", pool="prefork", graceshut=True, name="first"
    )
    try:
        worker.wait_ready()
        ids = send_tasks(direct)
        wait_started(ledger, {"long", "short"}, worker)
        # Slow from the drain on (it begins at once: a worker has no propagation delay).
        slowing = threading.Timer(1.0, lambda: setattr(link, "delay", ANSWER_DELAY))
        slowing.start()
        kubelet = Kubelet(worker)
        code = kubelet.terminate("sigterm")
        slowing.join()
    finally:
        worker.stop()
        link.cut()
    output = worker.output()
    assert not kubelet.killed, f"SIGKILLed at the grace period:\n{output}"
    assert code == 0, output
    report = json.loads(worker.report.read_text())
    label = {tag: f"work.sleep[{task_id}]" for tag, task_id in ids.items()}
    assert sorted(report["tasks"].get("restored", [])) == sorted(label[t] for t in HANDED_BACK), (
        output
    )
    assert report["abandoned"] == [label["long"]], report
    assert store.llen("celery") == len(HANDED_BACK), "every message back in the queue"
    assert store.hlen("unacked") == 0
