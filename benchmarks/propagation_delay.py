"""How long the propagation delay lasts behind a real router, fixed and ``auto``.

Two uvicorn pods (the test suite's e2e app) behind HAProxy in TCP mode, which
health-checks ``/readyz`` as kube-proxy's view of the endpoints would change; steady
keep-alive load through it; one pod terminated as the kubelet does it (preStop
``GET /shutdown``, then SIGTERM). For each case, N restarts: the delay's distribution,
how it ended, and the requests that failed. Then a rollout of several replicas (one new
pod up, one old pod terminated, in turn) with ``auto`` against a fixed 15 s delay.

    .venv/bin/python benchmarks/propagation_delay.py --restarts 30 --replicas 3

Needs haproxy (``scripts/system-deps`` installs it). Prints a Markdown table and saves
``benchmarks/results/propagation_delay.json`` (``--results DIR`` elsewhere), from which
``benchmarks/render.py`` writes its block of docs/benchmarks.md. ``--cap`` shortens the
cap and the fixed delay (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _harness import RESULTS, save_result  # noqa: E402
from tests.asgi_servers import Server, free_port  # noqa: E402
from tests.e2e.test_rolling_restart import HAProxy, kill_tree, kubelet_terminate  # noqa: E402

from graceshut.simulate._load import LoadGenerator, LoadSpec  # noqa: E402

CAP = 15.0


def auto_env(cap: float) -> dict[str, str]:
    """``auto`` with the default floor and quiet window, and *cap*."""
    return {
        "GRACESHUT_PROPAGATION_DELAY": "auto",
        "GRACESHUT_PROPAGATION_CAP": f"{cap:g}",
        "GRACESHUT_PROPAGATION_FLOOR": f"{min(2.0, cap):g}",
        "GRACESHUT_QUIET_WINDOW": "1",
    }


#: (name, HAProxy's check interval, requests per second, clients). Every request opens a
#: connection of its own, which HAProxy routes: the leaving pod gets requests until its
#: check takes the pod out.
CASES = [
    ("routers stop within 1 s", "1s", 100.0, 8),
    ("routers stop within 10 s", "10s", 100.0, 8),
    ("a trickle, 0.2 req/s", "1s", 0.2, 1),
    ("idle", "1s", 0.0, 1),
]


def start_pod(directory: Path, env: dict[str, str], port: int | None = None) -> Server:
    port = free_port() if port is None else port
    argv = [sys.executable, "-m", "uvicorn", "tests.e2e.app:app", "--port", str(port)]
    settings = {"GRACESHUT_GRACE_PERIOD": "30", "GRACESHUT_SAFETY_MARGIN": "1", **env}
    server = Server(argv, port, directory / f"{port}.events", settings)
    server.wait_ready()
    return server


def one_restart(
    directory: Path, env: dict[str, str], inter: str, rate: float, clients: int
) -> dict[str, Any]:
    pods = [start_pod(directory, env), start_pod(directory, env)]
    proxy = HAProxy(directory, [p.port for p in pods], inter=inter)
    load = None
    if rate:
        spec = LoadSpec(
            "127.0.0.1", proxy.port, rate=rate, concurrency=clients, timeout=5, keep_alive=False
        )
        load = LoadGenerator(spec)
        load.start()
    try:
        time.sleep(2.5)
        done = kubelet_terminate(pods[0])
    finally:
        if load is not None:
            load.stop()
        for pod in pods:
            kill_tree(pod.process.pid)
        proxy.stop()
    if done.hook_result is None:
        raise RuntimeError("the preStop hook did not run")
    report = json.loads(done.hook_result.body)
    step = next(p for p in report["phases"] if p["name"] == "propagation")
    stats = load.stats.snapshot() if load is not None else {"sent": 0, "failed": 0}
    return {
        "delay": step["started"] + step["duration"],
        "ended": report["propagation"],
        "sent": stats["sent"],
        "failed": stats["failed"],
    }


def rollout(directory: Path, env: dict[str, str], replicas: int) -> dict[str, Any]:
    old = [start_pod(directory, env) for _ in range(replicas)]
    new_ports = [free_port() for _ in range(replicas)]
    proxy = HAProxy(directory, [*(p.port for p in old), *new_ports], up=replicas, inter="1s")
    load = LoadGenerator(LoadSpec("127.0.0.1", proxy.port, rate=200, concurrency=8, timeout=5))
    started = list(old)
    load.start()
    try:
        time.sleep(2.5)
        began = time.monotonic()
        for index, leaving in enumerate(old):
            started.append(start_pod(directory, env, new_ports[index]))
            proxy.wait_for({f"pod{replicas + index}": "UP"})
            kubelet_terminate(leaving)
        took = time.monotonic() - began
    finally:
        load.stop()
        for pod in started:
            kill_tree(pod.process.pid)
        proxy.stop()
    stats = load.stats.snapshot()
    return {"seconds": took, "sent": stats["sent"], "failed": stats["failed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=30, help="restarts per case")
    parser.add_argument("--replicas", type=int, default=3, help="replicas in the rollout")
    parser.add_argument("--cap", type=float, default=CAP, help="the cap, and the fixed delay")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to save")
    parser.add_argument("--note", default="", help="what to know of the machine")
    args = parser.parse_args()
    env = auto_env(args.cap)
    fixed = {"GRACESHUT_PROPAGATION_DELAY": f"{args.cap:g}"}
    results: dict[str, Any] = {"restarts": {}, "rollout": {}}
    with tempfile.TemporaryDirectory(prefix="graceshut-delay-") as scratch:
        directory = Path(scratch)
        for name, inter, rate, clients in CASES:
            runs = [one_restart(directory, env, inter, rate, clients) for _ in range(args.restarts)]
            results["restarts"][name] = runs
            print(f"{name}: {[round(r['delay'], 2) for r in runs]}", file=sys.stderr)
        for label, settings in (("auto", env), (f"fixed {args.cap:g} s", fixed)):
            results["rollout"][label] = rollout(directory, settings, args.replicas)
    results["cap"] = args.cap
    results["replicas"] = args.replicas
    print("| case | restarts | delay: min / median / max (s) | ended by | requests failed |")
    print("| --- | --- | --- | --- | --- |")
    for name, runs in results["restarts"].items():
        delays = [r["delay"] for r in runs]
        ends = sorted({r["ended"] for r in runs})
        failed = sum(r["failed"] for r in runs)
        sent = sum(r["sent"] for r in runs)
        print(
            f"| {name} | {len(runs)} | {min(delays):.2f} / {statistics.median(delays):.2f} / "
            f"{max(delays):.2f} | {', '.join(ends)} | {failed} of {sent} |"
        )
    print()
    print(f"| rollout of {args.replicas} replicas | total (s) | requests failed |")
    print("| --- | --- | --- |")
    for label, run in results["rollout"].items():
        print(f"| {label} | {run['seconds']:.1f} | {run['failed']} of {run['sent']} |")
    command = "python3 benchmarks/propagation_delay.py " + " ".join(sys.argv[1:])
    save_result(
        args.results, "propagation_delay", command.strip(), results, quick=False, note=args.note
    )


if __name__ == "__main__":
    main()
