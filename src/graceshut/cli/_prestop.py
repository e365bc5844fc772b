"""``graceshut prestop URL``: call the shutdown route from an exec preStop hook.

For images without curl or a shell (distroless): only the standard library. Its exit
status and stderr end up in the pod's ``FailedPreStopHook`` event when it fails.
Without a token it sends the pod secret that the app made at startup, so the exec hook
needs no configuration; `call_shutdown` is the client, for every command that calls
the route.
"""

from __future__ import annotations

import argparse
import http
import http.client
import json
import math
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .._process._secret import find_credential
from . import _types as types

EXIT_CLEAN = 0
EXIT_HANDLERS_FAILED = 1
EXIT_REFUSED = 2
EXIT_UNREACHABLE = 3


def add_prestop_command(commands: Any) -> None:
    """Register the ``prestop`` sub-command."""
    parser = commands.add_parser(
        "prestop",
        help="call the app's shutdown route and wait for the report (for exec preStop hooks)",
        description="Call the shutdown route and wait until the app has drained. Exit status: "
        "0 clean, 1 the shutdown ran but a handler failed, 2 refused (token, method), "
        "3 unreachable or timed out.",
    )
    parser.add_argument(
        "url", type=types.url, help="the shutdown route, e.g. http://127.0.0.1:8000/shutdown"
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        help="bearer token (default: $GRACESHUT_TOKEN, else the pod secret that the app made)",
    )
    token.add_argument("--token-file", type=Path, help="read the bearer token from this file")
    parser.add_argument(
        "--timeout",
        type=types.positive_seconds,
        default=None,
        help="seconds to wait for the answer (default: $GRACESHUT_GRACE_PERIOD, else 30)",
    )
    parser.add_argument(
        "--unix-socket",
        metavar="PATH",
        help="connect to this Unix socket (an admin listener's unix:/PATH), as curl does",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    parser.set_defaults(run=run_prestop)


def run_prestop(args: argparse.Namespace) -> int:
    """Call the route; print a one-line verdict (and the report on stdout)."""
    try:
        token = _token(args)
        timeout = args.timeout if args.timeout is not None else _default_timeout()
        status, body = call_shutdown(
            args.url, token=token, timeout=timeout, unix_socket=args.unix_socket
        )
    except ValueError as exc:
        print(f"graceshut prestop: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"graceshut prestop: {args.url} unreachable: {reason}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return _verdict(status, body, quiet=args.quiet)


def call_shutdown(
    url: str, *, token: str | None = None, timeout: float = 30.0, unix_socket: str | None = None
) -> tuple[int, bytes]:
    """POST to the shutdown route at *url*; return the status and body, whatever they are.

    The credential is *token*, else what `find_credential` finds in the container
    (``GRACESHUT_TOKEN``, else the pod secret), so every caller authenticates alike.
    With *unix_socket*, the request goes to that socket; *url* gives the path.

    Raises:
        ValueError: *url* is not an http(s) URL, or the pod secret exists but cannot be
            trusted.
        OSError: The route is unreachable or did not answer in *timeout* seconds
            (`urllib.error.URLError` is one).
    """
    # urllib would also open file:// and ftp:// URLs: never anything but the route.
    types.check_url(url)
    # A Unix socket is local by nature: the pod secret may go there.
    credential = find_credential(token, url=None if unix_socket else url)
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    if unix_socket is not None:
        return _call_unix_socket(unix_socket, url, headers, timeout)
    request = urllib.request.Request(url, method="POST", headers=headers)  # noqa: S310
    # Never through HTTP(S)_PROXY: the call is for this pod, and carries the credential.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _call_unix_socket(
    path: str, url: str, headers: dict[str, str], timeout: float
) -> tuple[int, bytes]:
    split = urllib.parse.urlsplit(url)
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    connection = _UnixConnection(path, timeout)
    try:
        connection.request("POST", target, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _verdict(status: int, body: bytes, *, quiet: bool) -> int:
    try:
        payload: Any = json.loads(body)
    except ValueError:
        payload = None
    if status in (http.HTTPStatus.OK, http.HTTPStatus.ACCEPTED) and isinstance(payload, dict):
        if not quiet:
            print(json.dumps(payload, indent=2))
        if status == http.HTTPStatus.ACCEPTED or payload.get("ok", False):
            return EXIT_CLEAN
        failed = [
            f"{h.get('name')} ({h.get('outcome')}: {h.get('error')})"
            for h in payload.get("handlers", [])
            if h.get("outcome") != "ok"
        ]
        abandoned = payload.get("in_flight_abandoned", 0)
        detail = "; ".join(failed) or f"{abandoned} in-flight requests abandoned"
        print(f"graceshut prestop: shutdown finished with failures: {detail}", file=sys.stderr)
        return EXIT_HANDLERS_FAILED
    message = (
        payload.get("error") if isinstance(payload, dict) else body[:200].decode(errors="replace")
    )
    detail = payload.get("detail", "") if isinstance(payload, dict) else ""
    print(
        f"graceshut prestop: refused with HTTP {status}: {message}. {detail}".rstrip(),
        file=sys.stderr,
    )
    return EXIT_REFUSED


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        try:
            token = str(args.token_file.read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise ValueError(
                f"cannot read --token-file {args.token_file}: {exc.strerror}"
            ) from None
        if not token:
            raise ValueError(f"--token-file {args.token_file} is empty")
        return token
    if args.token is not None:
        return str(args.token)
    return None


def _default_timeout() -> float:
    raw = os.environ.get("GRACESHUT_GRACE_PERIOD")
    if raw is None:
        return 30.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"GRACESHUT_GRACE_PERIOD={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"GRACESHUT_GRACE_PERIOD={raw!r} must be a finite number above 0")
    return value
