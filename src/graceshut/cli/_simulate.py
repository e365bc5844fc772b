"""``graceshut simulate [options] -- COMMAND...``: play a pod's termination against a local app.

Starts the app, waits for its readiness probe, puts steady keep-alive load on it, then
does what the kubelet does (preStop hook, SIGTERM, SIGKILL at the end of the grace
period) while the Service stops routing new connections to it a little later. Reports
what happened when, which requests failed and how, and exits 0 only when the run was
clean, so that CI can gate on it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..simulate import _junit, _picture, _preflight, _report, _text
from ..simulate._manifest import ManifestError
from ..simulate._plan import DEFAULT_PORT, UsageError, build_plan
from ..simulate._run import Plan, Progress, simulate
from . import _types as types

EXIT_CLEAN = 0
EXIT_NOT_CLEAN = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def add_simulate_command(commands: Any) -> None:
    """Register the ``simulate`` sub-command."""
    parser = commands.add_parser(
        "simulate",
        help="play a pod's termination (preStop, SIGTERM, SIGKILL) against the app under load",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        usage="graceshut simulate [options] -- COMMAND...",
        epilog="Exit status: 0 clean (no failed request, no SIGKILL, exit status 0), "
        "1 not clean, 2 bad options or manifest.",
    )
    app = parser.add_argument_group("the app")
    app.add_argument(
        "app_command",
        nargs=argparse.REMAINDER,
        metavar="COMMAND",
        help="the command that starts the app (default: the manifest container's command)",
    )
    app.add_argument(
        "--port",
        type=_port,
        help="where the app listens (default: the "
        f"manifest's first containerPort, else {DEFAULT_PORT})",
    )
    app.add_argument(
        "--pod-ip",
        type=types.pod_ip,
        metavar="ADDRESS",
        help="where the kubelet and the Service reach the app (default: this machine's "
        "address, as a pod's IP: the app must listen on it, as in a pod)",
    )
    app.add_argument(
        "--env",
        action="append",
        default=[],
        type=_env,
        metavar="NAME=VALUE",
        help="set for the app and exec hooks, over the manifest's env (repeatable)",
    )
    app.add_argument(
        "--ready-timeout",
        type=_non_negative,
        default=60.0,
        metavar="SECONDS",
        help="how long the app may take to pass its readiness probe (default 60)",
    )
    app.add_argument("--app-log", type=Path, metavar="FILE", help="write the app's output here")

    kubelet = parser.add_argument_group("the kubelet")
    kubelet.add_argument(
        "--manifest", type=Path, metavar="FILE", help="a Pod or workload manifest, YAML or JSON"
    )
    kubelet.add_argument(
        "--container", metavar="NAME", help="the container in the manifest (if several)"
    )
    kubelet.add_argument(
        "--grace-period",
        type=_whole_seconds,
        metavar="SECONDS",
        help="terminationGracePeriodSeconds, whole seconds; 0 is 1 to the kubelet "
        "(default: the manifest's, else 30)",
    )
    shorter = kubelet.add_mutually_exclusive_group()
    shorter.add_argument(
        "--grace-period-override",
        type=_whole_seconds,
        metavar="SECONDS",
        help="delete the pod with this grace period instead of the manifest's, as kubectl "
        "delete --grace-period, kubectl drain --grace-period and the Eviction API's "
        "gracePeriodSeconds (spot-interruption handlers, Karpenter, the cluster "
        "autoscaler) do; the pod object gets the deletionTimestamp that says so",
    )
    shorter.add_argument(
        "--node-shutdown",
        type=_node_shutdown,
        metavar="GRACE[,CRITICAL]",
        help="the kubelet's graceful node shutdown (shutdownGracePeriod and "
        "shutdownGracePeriodCriticalPods, whole seconds): a non-critical pod gets "
        "GRACE - CRITICAL, or its own grace period when shorter, and no deletionTimestamp",
    )
    kubelet.add_argument(
        "--stop-signal",
        metavar="SIGNAL",
        help="the image's STOPSIGNAL (default: the manifest's lifecycle.stopSignal, else SIGTERM)",
    )
    kubelet.add_argument(
        "--pid-namespace",
        choices=("auto", "on", "off"),
        default="auto",
        help="run the app as PID 1 of a PID namespace of its own, as in a container "
        "(auto: where the machine allows it; default auto)",
    )
    hook = kubelet.add_mutually_exclusive_group()
    hook.add_argument(
        "--prestop-http", metavar="PATH", type=_path, help="preStop httpGet PATH on the app's port"
    )
    hook.add_argument(
        "--prestop-exec", metavar="COMMAND", help="preStop exec (a shell-quoted line)"
    )
    hook.add_argument(
        "--prestop-sleep",
        metavar="SECONDS",
        type=_whole_seconds,
        help="preStop sleep (whole seconds, at most the grace period)",
    )
    hook.add_argument("--no-prestop", action="store_true", help="ignore the manifest's preStop")
    kubelet.add_argument(
        "--prestop-header",
        action="append",
        default=[],
        type=_header,
        metavar="'NAME: VALUE'",
        help="header for --prestop-http (repeatable)",
    )
    kubelet.add_argument(
        "--ready-path",
        type=_path,
        metavar="PATH",
        help="readiness probe httpGet PATH (default: the manifest's readinessProbe, else /readyz)",
    )
    kubelet.add_argument(
        "--endpoint-lag",
        type=_non_negative,
        default=2.0,
        metavar="SECONDS",
        help="how long after the deletion the Service still opens new connections to the "
        "pod (kube-proxy, ingress: 1-5 s; default 2)",
    )
    kubelet.add_argument(
        "--replicas",
        type=_clients,
        metavar="N",
        help="pods behind the Service, this one included; with 1, kube-proxy keeps "
        "sending new connections to the terminating pod (default: the manifest's, else 2)",
    )
    kubelet.add_argument(
        "--publish-not-ready-addresses",
        action="store_true",
        help="the Service's publishNotReadyAddresses (default: from a Service in the manifest)",
    )

    load = parser.add_argument_group("the load")
    load.add_argument(
        "--rate",
        type=_non_negative,
        default=50.0,
        metavar="REQ_PER_S",
        help="requests per second over all clients, 0: as fast as they can (default 50)",
    )
    load.add_argument(
        "--concurrency",
        type=_clients,
        default=4,
        metavar="N",
        help="clients, one connection each (default 4)",
    )
    load.add_argument(
        "--path",
        action="append",
        type=_path,
        dest="paths",
        metavar="PATH",
        help="path to request (repeatable, taken in turn; default /)",
    )
    load.add_argument(
        "--grpc",
        action="append",
        type=_grpc_method,
        dest="grpc_unary",
        metavar="/PKG.SERVICE/METHOD",
        help="call this unary gRPC method instead of HTTP requests (repeatable; empty request)",
    )
    load.add_argument(
        "--grpc-stream",
        action="append",
        type=_grpc_method,
        metavar="/PKG.SERVICE/METHOD",
        help="keep a call to this server-streaming gRPC method open (repeatable)",
    )
    load.add_argument("--no-keep-alive", action="store_true", help="a new connection per request")
    load.add_argument(
        "--timeout",
        type=types.positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="a request without an answer after this long failed (default 10)",
    )
    load.add_argument(
        "--warmup",
        type=_non_negative,
        default=2.0,
        metavar="SECONDS",
        help="load before the termination starts (default 2)",
    )

    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument("--no-progress", action="store_true", help="no status line on stderr")
    output.add_argument(
        "--junit-xml", type=Path, metavar="FILE", help="write the checks as a JUnit XML report"
    )
    output.add_argument(
        "--svg", type=Path, metavar="FILE", help="write the timeline as an SVG picture"
    )
    output.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write the picture and the report as one HTML page",
    )
    parser.set_defaults(run=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    """Run the simulation and print the report; the exit status is the verdict."""
    try:
        plan = _checked_plan(args)
    except (UsageError, ManifestError) as exc:
        print(f"graceshut simulate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = None
    if not args.no_progress and sys.stderr.isatty():
        progress = Progress(sys.stderr)
    try:
        outcome = simulate(plan, progress)
    except OSError as exc:
        print(f"graceshut simulate: error: cannot start {plan.command[0]}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("graceshut simulate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if progress is not None:
            progress.close()
        if plan.scratch is not None:
            shutil.rmtree(plan.scratch, ignore_errors=True)
    data = _report.to_dict(outcome)
    text = _text.render_text(data)
    print(json.dumps(data, indent=2) if args.json else text)
    _write_files(
        [
            (args.junit_xml, lambda: _junit.render(data, text)),
            (args.svg, lambda: _picture.render_svg(data)),
            (args.html, lambda: _picture.render_html(data, text)),
        ]
    )
    return EXIT_CLEAN if data["clean"] else EXIT_NOT_CLEAN


def _checked_plan(args: argparse.Namespace) -> Plan:
    """The plan, once nothing is in the way that would lose the run or its verdict.

    Checked before the app starts: a file that cannot be written, another process on
    the app's port.
    """
    outputs = (
        ("--app-log", args.app_log),
        ("--junit-xml", args.junit_xml),
        ("--svg", args.svg),
        ("--html", args.html),
    )
    problem = _preflight.unwritable(outputs)
    if problem is not None:
        raise UsageError(problem)
    plan = build_plan(args)
    taken = _preflight.port_taken(plan.load.port)
    if taken is not None:
        if plan.scratch is not None:
            shutil.rmtree(plan.scratch, ignore_errors=True)
        raise UsageError(taken)
    return plan


def _write_files(files: list[tuple[Path | None, Callable[[], str]]]) -> None:
    for path, render in files:
        if path is not None:
            try:
                path.write_text(render(), encoding="utf-8")
            except OSError as exc:  # checked up front, yet a disk can fill: keep the verdict
                print(
                    f"graceshut simulate: warning: cannot write {path}: {exc.strerror or exc}",
                    file=sys.stderr,
                )


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _whole_seconds(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    if not value.is_integer():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of seconds: Kubernetes takes whole seconds "
            "(the API field is an integer, and kubectl --grace-period refuses a fraction)"
        )
    return int(value)


def _node_shutdown(text: str) -> tuple[int, int]:
    grace, _, critical = text.partition(",")
    values = (_whole_seconds(grace.strip()), _whole_seconds(critical.strip() or "0"))
    if values[0] == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a shutdownGracePeriod of 0 turns graceful node shutdown off"
        )
    if values[1] > values[0]:
        raise argparse.ArgumentTypeError(
            f"{text!r}: shutdownGracePeriodCriticalPods is longer than shutdownGracePeriod "
            "(the kubelet then turns graceful node shutdown off)"
        )
    return values


def _whole_number(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not between {low} and {high}")
        return value

    return parse


_clients = _whole_number(1, 1000, "a whole number")
_port = _whole_number(1, 65535, "a port number")


def _path(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r} must start with /")
    return text


def _grpc_method(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:  # noqa: PLR2004
        raise argparse.ArgumentTypeError(f"{text!r} is not a gRPC method: /package.Service/Method")
    return text


def _env(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not 'NAME: VALUE'")
    return name.strip(), value.strip()
