"""Requests per second of a trivial route under uvicorn, with and without graceshut.

Every app runs in its own uvicorn process at once (one worker, pinned to the first CPU),
and a real load generator (wrk, else hey) on the other CPU loads them in turn, the order
rotated every round so that drift on the machine falls on all of them alike. Two numbers
per app: requests per second as wrk counts them, and requests per CPU-second of the
server process during the same runs, which other load on the machine does not move.
Both uvicorn stacks are measured: uvloop + httptools (as `uvicorn[standard]` runs) and
asyncio + h11 (plain `uvicorn`).

    python benchmarks/run.py throughput [--quick]
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import peers
from _harness import BENCHMARKS, Config, Line, Measure, median, ratio, usable_cores, version_of

#: graceshut's ratio to the bare app may be at most this much below the hand-written
#: counter's, measured in the same run: no counting middleware reads better than the
#: counter (0.974 of bare under uvloop + httptools), so that is the floor to hold to.
GOAL_POINTS = 0.01
CONNECTIONS = 32
APPS = {
    "bare app": ("_apps:bare", None),
    "graceshut": ("_apps:with_graceshut", None),
    "pure-ASGI counter": ("_apps:with_counter", None),
    "counter + closing send": ("_apps:with_closing_counter", None),
    "BaseHTTPMiddleware counter": ("_apps:with_base_http_counter", None),
    "svc-infra": ("_apps:with_svc_infra", peers.SVC_INFRA),
}
LABELS = {"svc-infra": f"{peers.label(peers.SVC_INFRA)} install_graceful_shutdown"}
INSTALL_HINT = "apt-get install -y wrk (Debian/Ubuntu), or hey"


def _pin(cpu: int) -> list[str]:
    """A taskset prefix that keeps server and load apart, when there are two cores."""
    if usable_cores() >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/")
        ok = connection.getresponse().status == 200
        connection.close()
    except OSError:
        return False
    return ok


STACKS = {
    "uvloop+httptools": ["--loop", "uvloop", "--http", "httptools"],
    "asyncio+h11": ["--loop", "asyncio", "--http", "h11"],
}


def stacks(config: Config) -> list[str]:
    """The uvicorn stacks to measure: the fast one first, when it is installed."""
    found = [name for name in STACKS if name != "uvloop+httptools" or _fast_stack()]
    return found[:1] if config.quick else found


def _fast_stack() -> bool:
    return bool(version_of("uvloop") and version_of("httptools"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time that process *pid* has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serve(target: str, stack: str) -> Iterator[tuple[int, int]]:
    """Run *target* (module:factory) under uvicorn; yield its port and pid; stop it after."""
    port = _free_port()
    command = [
        *_pin(0),
        sys.executable, "-m", "uvicorn", "--factory", target, *STACKS[stack],
        "--app-dir", str(BENCHMARKS), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GRACESHUT_")}
    server = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _answers(port):
            if server.poll() is not None:
                raise RuntimeError(f"uvicorn {target} exited with {server.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn {target} did not answer within 30s")
            time.sleep(0.05)
        yield port, server.pid  # taskset execs uvicorn: the same pid
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def load_tool() -> str | None:
    """The load generator found on PATH: wrk, else hey, else None."""
    for tool in ("wrk", "hey"):
        if shutil.which(tool):
            return tool
    return None


@dataclasses.dataclass
class Run:
    """One load run against one server."""

    per_second: float
    per_cpu_second: float
    errors: str


def load(tool: str, port: int, pid: int, seconds: int) -> Run:
    """Load 127.0.0.1:*port* for *seconds*; requests per second, and per server CPU-second."""
    url = f"http://127.0.0.1:{port}/"
    if tool == "wrk":
        command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", url]
        total_pattern = r"(\d+) requests in"
    else:
        command = ["hey", "-z", f"{seconds}s", "-c", str(CONNECTIONS), url]
        total_pattern = r"\[200\]\s+(\d+) responses"
    cpu_before = cpu_seconds(pid)
    done = subprocess.run(
        [*_pin(1), *command], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    cpu = cpu_seconds(pid) - cpu_before
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    total = re.search(total_pattern, done.stdout)
    if done.returncode != 0 or rate is None or total is None:
        raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")
    errors = re.findall(r"(Socket errors:.*|Non-2xx or 3xx responses:.*)", done.stdout)
    return Run(float(rate.group(1)), int(total.group(1)) / max(cpu, 1e-9), "; ".join(errors))


def _stack_measures(config: Config, tool: str, stack: str) -> list[Measure]:
    seconds = config.pick(4, 1)  # wrk takes whole seconds
    warmup = config.pick(2, 1)
    rounds = config.pick(7, 1)
    targets = {
        name: target for name, (target, needs) in APPS.items() if needs is None or version_of(needs)
    }
    runs: dict[str, list[Run]] = {name: [] for name in targets}
    with contextlib.ExitStack() as servers:
        started = {name: servers.enter_context(serve(t, stack)) for name, t in targets.items()}
        for port, pid in started.values():
            load(tool, port, pid, warmup)
        names = list(started)
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                runs[name].append(load(tool, *started[name], seconds))
    pinning = "server on CPU 0, load on CPU 1" if _pin(0) else "not pinned (one core)"
    command = (
        f"wrk -t1 -c{CONNECTIONS} -d{seconds}s"
        if tool == "wrk"
        else f"hey -c {CONNECTIONS} -z {seconds}s"
    )
    errors = [f"{name}: {r.errors}" for name, rs in runs.items() for r in rs if r.errors]
    measures = []
    for key, unit, title, pick in (
        ("throughput", "req/s", f"throughput, uvicorn {stack}, {tool}", "per_second"),
        (
            "throughput-cpu",
            "req/cpu-s",
            f"throughput per server CPU-second, {stack}",
            "per_cpu_second",
        ),
    ):
        values = {name: [getattr(r, pick) for r in rs] for name, rs in runs.items()}
        result = {name: median(v) for name, v in values.items()}
        graceshut = result.pop("graceshut")
        per_round = [g / b for g, b in zip(values["graceshut"], values["bare app"], strict=True)]
        lines = [
            Line(LABELS.get(name, name), value, ratio(graceshut, value))
            for name, value in result.items()
        ]
        if "svc-infra" not in targets:
            lines.append(Line(peers.missing(peers.SVC_INFRA), None))
        detail = (
            f"{command}, {rounds} rounds rotated, median; one uvicorn worker per app, "
            f"{pinning}; graceshut / bare per round: " + ", ".join(f"{r:.3f}" for r in per_round)
        )
        if key == "throughput-cpu":
            detail = (
                "requests served / CPU time the server process used during the same runs: "
                "what one core sustains, unmoved by other load on the machine; " + detail
            )
        elif errors:
            detail += "; load errors: " + " | ".join(errors)
        floor = result["pure-ASGI counter"] / result["bare app"] - GOAL_POINTS
        measures.append(
            Measure(
                key=key,
                title=title,
                unit=unit,
                graceshut=graceshut,
                goal=f">= counter's ratio - {GOAL_POINTS * 100:g} point",
                met=graceshut / result["bare app"] >= floor,
                lines=lines,
                detail=detail,
            )
        )
    return measures


#: The servers of the paired measure: the control is a second copy of the bare app.
PAIRED = ("bare app", "graceshut", "pure-ASGI counter", "counter + closing send", "control")
PAIRED_APP = {"control": "bare app"}


def _paired_rounds(
    stack: str, tool: str, order: list[str], seconds: int, rounds: int
) -> list[dict[str, float]]:
    """Start the paired servers in *order* and load them all at once, *rounds* times.

    Returns each round's requests per server CPU-second, by server.
    """
    with contextlib.ExitStack() as servers:
        started = {
            name: servers.enter_context(serve(APPS[PAIRED_APP.get(name, name)][0], stack))
            for name in order
        }
        with concurrent.futures.ThreadPoolExecutor(len(started)) as pool:

            def load_all(seconds: int) -> dict[str, float]:
                runs = pool.map(lambda server: load(tool, *server, seconds), started.values())
                return {name: run.per_cpu_second for name, run in zip(started, runs, strict=True)}

            load_all(min(seconds, 2))  # warm up
            return [load_all(seconds) for _ in range(rounds)]


def _paired_measure(config: Config, tool: str, stack: str) -> Measure:
    """Two copies of the bare app, the two counters and graceshut loaded at once, on one core.

    The five servers run on CPU 0 and five load generators on CPU 1 drive them at
    once, so whatever slows the machine during a round (a noisy neighbour, frequency
    changes) slows all alike, and the ratio of requests per CPU-second within a round
    is the ratio of what a request costs each. The second bare copy is the control:
    its ratio to the first is what the method reads when nothing differs. A server's
    place in the lineup (the order they start in) is worth about a point on its own, so
    the servers are started anew in a rotated order for each block of rounds.
    """
    seconds = config.pick(4, 1)
    blocks = config.pick(5, 1)
    rounds_per_block = config.pick(2, 1)
    ratios: dict[str, list[float]] = {name: [] for name in PAIRED[1:]}
    for block in range(blocks):
        order = list(PAIRED[block % len(PAIRED) :] + PAIRED[: block % len(PAIRED)])
        for rates in _paired_rounds(stack, tool, order, seconds, rounds_per_block):
            bare = (rates["bare app"] + rates["control"]) / 2
            for name in PAIRED[1:-1]:
                ratios[name].append(rates[name] / bare)
            ratios["control"].append(rates["control"] / rates["bare app"])
    value = median(ratios["graceshut"])
    counter_value = median(ratios["pure-ASGI counter"])
    closing_value = median(ratios["counter + closing send"])
    control = median(ratios["control"])
    rounds = blocks * rounds_per_block
    return Measure(
        key="throughput-paired",
        title=f"throughput ratio, paired on one core, {stack}",
        unit="x bare",
        graceshut=value,
        goal=f">= counter's ratio - {GOAL_POINTS * 100:g} point",
        met=value >= counter_value - GOAL_POINTS,
        lines=[
            Line("bare app (two copies), loaded at the same time", 1.0, value),
            Line(
                "pure-ASGI counter, loaded at the same time", counter_value, value / counter_value
            ),
            Line(
                "counter + closing send, loaded at the same time",
                closing_value,
                value / closing_value,
            ),
            # Not a baseline: the method's own reading when nothing differs.
            Line(f"control: second bare copy / first = {control:.3f}", None),
        ],
        detail=(
            f"five servers on one core at once, each under {tool} with {CONNECTIONS} "
            f"connections for {seconds} s; requests per server CPU-second over the mean "
            f"of the two bare copies; {blocks} blocks of {rounds_per_block} rounds, the "
            f"servers started anew in a rotated order for each block; median of {rounds} "
            "rounds; per round: "
            + "; ".join(
                f"{name} " + ", ".join(f"{r:.3f}" for r in values)
                for name, values in ratios.items()
            )
        ),
        values={
            "graceshut - counter, in points": (value - counter_value) * 100,
            "graceshut - closing send, in points": (value - closing_value) * 100,
            "control: second bare copy / first": control,
            "graceshut, lowest round": min(ratios["graceshut"]),
            "graceshut, highest round": max(ratios["graceshut"]),
        },
    )


def measure(config: Config) -> list[Measure]:
    """graceshut's throughput against the bare app and the other ways of counting."""
    tool = load_tool()
    if tool is None:
        return [
            Measure(
                "throughput",
                "throughput under uvicorn",
                "req/s",
                None,
                f">= counter's ratio - {GOAL_POINTS * 100:g} point",
                None,
                [],
                skipped=f"no load generator: wrk and hey not installed ({INSTALL_HINT})",
            )
        ]
    measures = []
    for stack in stacks(config):
        measures += _stack_measures(config, tool, stack)
        measures.append(_paired_measure(config, tool, stack))
    return measures


if __name__ == "__main__":
    import run

    sys.exit(run.main(["throughput", *sys.argv[1:]]))
