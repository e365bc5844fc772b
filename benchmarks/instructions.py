"""Instructions per request under uvicorn, counted by valgrind: bare app, counters, graceshut.

Timing a server on a shared machine moves by a point or two from one round to the next
(docs/benchmarks.md, "throughput, paired"), as much as the difference this measure is
for. Instructions do not: callgrind counts what the server's CPU executes, whatever else
the machine is doing. Each app runs in its own uvicorn process under
``valgrind --tool=callgrind`` with counting off; a keep-alive client warms it up, counting
is switched on (``callgrind_control -i on``) for a fixed number of requests, then off, so
that only the requests are counted, never startup or shutdown. The client is another
process, not counted.

The apps are those of the throughput measure (`_apps`): the bare app, the hand counter,
the counter with a closing send (the floor of keeping the ``Connection: close``
promise) and graceshut. An instruction is not a nanosecond (cache misses and branches
are not counted). Counts repeat for the same code to about 0.3 %, but a change of code
anywhere in the process can move them by about 1,000 instructions, as the
interpreter's caches fall differently: read differences under half a point as unsettled.

    python benchmarks/instructions.py [--requests N] [--warmup N] [--launches K] [--stack NAME]
                                      [--results DIR] [--note TEXT]

The counts are saved in benchmarks/results/instructions.json (or --results DIR), which
docs/benchmarks.md is rendered from.

Needs valgrind (``apt-get install -y valgrind``) and the benchmark environment
(``python3 benchmarks/run.py setup``, for uvloop and httptools); run it with
``benchmarks/.venv/bin/python``. A launch takes about two minutes per stack.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import BENCHMARKS, RESULTS, add_result_options, save_result

DEFAULT_REQUESTS = 3000
#: The request path's goal, as in the paired throughput measure: graceshut within a
#: point (of the bare app's count) of the hand-written counter.
GOAL_POINTS = 1.0
APPS = {
    "bare": "bare",
    "counter": "with_counter",
    "closing": "with_closing_counter",
    "graceshut": "with_graceshut",
}
STACKS = {
    "uvloop+httptools": ["--loop", "uvloop", "--http", "httptools"],
    "asyncio+h11": ["--loop", "asyncio", "--http", "h11"],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(port: int, count: int) -> None:
    """*count* GET / on one keep-alive connection, each checked."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(count):
            connection.request("GET", "/")
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"the app answered {response.status}")
    finally:
        connection.close()


def _wait_until_up(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300  # uvicorn starts slowly under valgrind
    while True:
        try:
            _get(port, 1)
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start (status {server.poll()})") from None
            time.sleep(0.5)
        else:
            return


def _control(*args: str) -> None:
    quiet = subprocess.DEVNULL
    subprocess.run(["callgrind_control", *args], check=True, stdout=quiet, stderr=quiet)


def instructions_per_request(
    app: str, stack: str, requests: int, workdir: Path, *, warmup: int = 1000
) -> float:
    """Instructions the server executes per request of *app* (a factory in `_apps`)."""
    port = _free_port()
    out = workdir / f"{app}.{stack}.{port}.callgrind"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    uvicorn = [sys.executable, "-m", "uvicorn", "--factory", f"_apps:{app}"]
    uvicorn += ["--app-dir", str(BENCHMARKS), "--port", str(port), *STACKS[stack]]
    uvicorn += ["--log-level", "warning", "--no-access-log"]
    server = subprocess.Popen(
        [*valgrind, *uvicorn],
        stderr=subprocess.DEVNULL,
        # The same string hashes in every launch: one fewer thing that differs.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    try:
        _wait_until_up(port, server)
        _get(port, warmup)  # specialised bytecode, warm caches, uvicorn's date header cached
        _control("-i", "on", str(server.pid))
        _get(port, requests)
        _control("-i", "off", str(server.pid))
        _control("-d", str(server.pid))
    finally:
        server.terminate()
        server.wait(timeout=120)
    total = 0
    for dump in workdir.glob(out.name + "*"):
        for line in dump.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    if not total:
        raise RuntimeError(f"callgrind wrote no count for {app}")
    return total / requests


def main() -> None:
    """Count each app on each stack, print the ratios to the bare app, save them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--warmup", type=int, default=1000, help="requests before counting")
    parser.add_argument("--launches", type=int, default=2)
    parser.add_argument("--stack", action="append", choices=list(STACKS))
    add_result_options(parser)
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: apt-get install -y valgrind")
    print(f"python: {sys.version.split()[0]}; {args.requests} requests a launch")
    stacks: dict[str, dict[str, dict[str, float]]] = {}
    goals: dict[str, bool] = {}
    for stack in args.stack or list(STACKS):
        counts: dict[str, list[float]] = {name: [] for name in APPS}
        with tempfile.TemporaryDirectory() as workdir:
            for _ in range(args.launches):
                for name, factory in APPS.items():
                    counts[name].append(
                        instructions_per_request(
                            factory, stack, args.requests, Path(workdir), warmup=args.warmup
                        )
                    )
        bare = statistics.median(counts["bare"])
        print(f"\n{stack}: instructions per request (median of {args.launches} launches)")
        for name, values in counts.items():
            value = statistics.median(values)
            spread = f"{min(values):,.0f}-{max(values):,.0f}"
            print(
                f"  {name:10s} {value:9,.0f}  ({spread})  added {value - bare:+7,.0f}  "
                f"ratio to bare {bare / value:.4f}"
            )
        for floor in ("counter", "closing"):
            gap = statistics.median(counts["graceshut"]) - statistics.median(counts[floor])
            points = 100 * gap / bare
            print(f"  graceshut - {floor}: {gap:+,.0f} instructions, {points:.2f} points")
        stacks[stack] = {
            name: {"median": statistics.median(v), "min": min(v), "max": max(v)}
            for name, v in counts.items()
        }
        gap = statistics.median(counts["graceshut"]) - statistics.median(counts["counter"])
        goals[stack] = 100 * gap / bare <= GOAL_POINTS
    command = "benchmarks/.venv/bin/python benchmarks/instructions.py"
    quick = args.requests < DEFAULT_REQUESTS or args.launches < 2
    payload = {
        "requests": args.requests,
        "warmup": args.warmup,
        "launches": args.launches,
        "goal": f"graceshut - counter <= {GOAL_POINTS:g} point of the bare app's count",
        "met": goals,
        "stacks": stacks,
    }
    results = args.results if args.results is not None else RESULTS
    save_result(results, "instructions", command, payload, quick=quick, note=args.note)


if __name__ == "__main__":
    main()
