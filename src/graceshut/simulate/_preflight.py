"""What ``graceshut simulate`` checks before it starts the app, so that a run is never lost.

- The files it writes (``--app-log``, ``--junit-xml``, ``--svg``, ``--html``): a path
  that cannot be written is refused up front, instead of killing the thread that reads
  the app's output (the app then blocks once the pipe holds 64 KiB) or throwing the
  verdict away after the whole run.
- The app's port: when another process already listens there, the app cannot bind it
  (or shares it, with ``SO_REUSEPORT``), and the run would blame the app, for instance
  as bound to 127.0.0.1 only, for what is someone else's socket.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from .._process import _proc as proc


def unwritable(outputs: Iterable[tuple[str, Path | None]]) -> str | None:
    """Why one of the (option, path) cannot be written, or None when all can.

    Each is opened for appending, as the run will write it; a file made only for the
    check is removed again.
    """
    for option, path in outputs:
        if path is None:
            continue
        existed = os.path.lexists(path)
        try:
            with path.open("ab"):
                pass
        except OSError as exc:
            return f"{option} {path}: cannot write there: {exc.strerror or exc}"
        if not existed:
            with contextlib.suppress(OSError):
                path.unlink()
    return None


def port_taken(port: int, app: int | None = None) -> str | None:
    """Who else listens on *port* over IPv4, or None when nobody does.

    Listeners held by *app* or its descendants are the app's own and do not count.
    """
    ours = _family(app) if app is not None else set()
    for listener in proc.listeners(port):
        if listener.pid is not None and listener.pid in ours:
            continue
        if not _blocks_ipv4(listener.address):
            continue
        return (
            f"port {port} is already in use by {listener.describe()}, listening on "
            f"{_join(listener.address, port)}: stop it, or run the app on another port "
            "(its own option and --port)"
        )
    return None


def _blocks_ipv4(address: str) -> bool:
    """Whether a listener on *address* stops an app binding the port on IPv4.

    Any IPv4 address does: the app binds 0.0.0.0 as in a pod, or the same address. An
    IPv6 one only as ``::`` (dual-stack by default on Linux) or an IPv4-mapped address.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return True
    return ip.is_unspecified or ip.ipv4_mapped is not None


def _family(root: int) -> set[int]:
    """*root* and every process descending from it."""
    children: dict[int, list[int]] = {}
    for found in proc.all_processes():
        children.setdefault(found.ppid, []).append(found.pid)
    family, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in family:
            family.add(pid)
            todo.extend(children.get(pid, ()))
    return family


def _join(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
