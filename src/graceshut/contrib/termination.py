"""The shutdown summary as the container's termination message.

Kubernetes shows the file at ``terminationMessagePath`` (``/dev/termination-log`` by
default) as the terminated container's ``Message`` in ``kubectl describe pod`` and in
``status.containerStatuses[].lastState.terminated.message``, so how the last shutdown
went stays visible after the pod is gone from the logs. Kubernetes keeps at most 4 KB::

    from graceshut.contrib.termination import write_termination_message

    write_termination_message(coordinator)

No extra is needed: this module uses the standard library only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .._process._watchdog import ForcedExit, on_forced_exit

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator
    from .._core._report import HandlerResult, ShutdownReport

__all__ = [
    "DEFAULT_PATH",
    "ENV_TERMINATION_LOG",
    "MAX_BYTES",
    "deadline_line",
    "render_termination_message",
    "write_termination_message",
]

logger = logging.getLogger("graceshut")

DEFAULT_PATH = "/dev/termination-log"
"""Kubernetes' default ``terminationMessagePath``."""
ENV_TERMINATION_LOG = "GRACESHUT_TERMINATION_LOG"
"""The variable that overrides the default path."""
MAX_BYTES = 4096
"""What Kubernetes keeps of a termination message."""

_MAX_LINE = 512  # one long error must not crowd out the others


def render_termination_message(report: ShutdownReport, *, max_bytes: int = MAX_BYTES) -> str:
    """The message for *report*: the summary, the deadline, one line per handler not ``ok``.

    At most *max_bytes* bytes of UTF-8. Each handler line is cut at 512 bytes; when not
    all of them fit, the last line says how many were left out.

    Example::

        print(render_termination_message(report))
        # shutdown (SIGTERM) finished with failures in 4.212s: 1 ok, 1 timeout; ...
        # deadline: 14.0s after the first trigger (api): from the API server: ...
        # - drain/queue-consumer: timeout after 3.000s: did not finish within 3.000s
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes={max_bytes!r} must be at least 1")
    summary = _cut(report.summary(), max_bytes)
    lines = [summary]
    used = len(summary.encode())
    deadline = _cut(deadline_line(report), _MAX_LINE)
    if report.budget is not None and used + 1 + len(deadline.encode()) <= max_bytes:
        lines.append(deadline)
        used += 1 + len(deadline.encode())
    failed = report.failed()
    for index, result in enumerate(failed):
        line = _cut(_describe(result), _MAX_LINE)
        left_after = len(failed) - index - 1
        # Room for this line, and for the "left out" line should a later one not fit.
        reserve = len(_left_out(left_after).encode()) + 1 if left_after else 0
        if used + 1 + len(line.encode()) + reserve > max_bytes:
            trailer = _left_out(len(failed) - index)
            if used + 1 + len(trailer.encode()) <= max_bytes:
                lines.append(trailer)
            break
        lines.append(line)
        used += 1 + len(line.encode())
    return "\n".join(lines)


def write_termination_message(
    coordinator: Coordinator,
    path: str | os.PathLike[str] | None = None,
    *,
    max_bytes: int = MAX_BYTES,
) -> Path:
    """Write the report's summary to the termination message file once the run is over.

    It is written from a report listener, before `~graceshut.Coordinator.shutdown`
    returns; if the exit watchdog later has to end the process (exit-time work that
    overran the grace period), it is written again with a line that says what was
    still running. A file that cannot be written is skipped with a log line (``DEBUG`` for
    the default path outside Kubernetes, ``INFO`` otherwise); it never fails the run.

    Args:
        coordinator: The coordinator whose report to write.
        path: Where to write; default ``GRACESHUT_TERMINATION_LOG``, else
            ``/dev/termination-log``. The default path is only written when it exists
            (Kubernetes creates it), so a run outside a pod leaves nothing in ``/dev``;
            a path you choose is created.
        max_bytes: The size cap; Kubernetes keeps 4096 bytes.

    Returns:
        The path that will be written.

    Example::

        write_termination_message(coordinator)
        # kubectl describe pod web-7d9f-abcde  ->  Last State: Terminated ... Message:
        #   shutdown (SIGTERM) finished clean in 6.018s: 3 ok; 2 in flight at start, ...
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes={max_bytes!r} must be at least 1")
    chosen = path if path is not None else os.environ.get(ENV_TERMINATION_LOG) or None
    target = Path(chosen if chosen is not None else DEFAULT_PATH)
    create = chosen is not None

    def write(report: ShutdownReport, forced: str = "") -> None:
        # A forced exit's line goes first, after the summary: it says why the
        # process ended as it did, and must not be the line that is cut.
        room = max_bytes - len(forced.encode()) if forced else max_bytes
        message = render_termination_message(report, max_bytes=max(1, room))
        if forced:
            summary, _, rest = message.partition("\n")
            message = "\n".join(part for part in (summary, forced.rstrip("\n"), rest) if part)
        data = _cut(message, max_bytes).encode()
        flags = os.O_WRONLY | os.O_TRUNC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(target, flags, 0o644)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        except OSError as exc:
            quiet = not create and isinstance(exc, FileNotFoundError)
            logger.log(
                logging.DEBUG if quiet else logging.INFO,
                "termination message not written to %s: %s",
                target,
                exc.strerror or exc,
                extra={"phase": "report", "outcome": "skipped", "path": str(target)},
            )
            return
        logger.debug(
            "termination message written to %s (%d bytes)",
            target,
            len(data),
            extra={"phase": "report", "outcome": "ok", "path": str(target)},
        )

    def write_forced(forced: ForcedExit) -> None:
        line = _cut(f"- exit forced after {forced.after:.3f}s: {forced.still_running}", _MAX_LINE)
        write(forced.report, line + "\n")

    coordinator.on_report(write)
    # The exit watchdog ends the process when exit-time work overruns: say so too.
    on_forced_exit(write_forced)
    return target


def deadline_line(report: ShutdownReport) -> str:
    """Which deadline the run used and where it came from, in one line."""
    budget = f"{report.budget:.1f}s" if report.budget is not None else "unknown"
    return f"deadline: {budget} after the first trigger ({report.deadline_source}): " + (
        report.deadline_detail or "configured"
    )


def _describe(result: HandlerResult) -> str:
    line = (
        f"- {result.phase.value}/{result.name}: {result.outcome.value} after {result.duration:.3f}s"
    )
    # Where a fallback put the data matters more once the pod is gone than the error
    # text: the error gets what the 512-byte line has left after it.
    said = f"; fallback {result.fallback.describe()}" if result.fallback is not None else ""
    if result.error:
        room = _MAX_LINE - len(line.encode()) - len(said.encode()) - 2
        error = " ".join(result.error.split())  # one line, whatever the error text
        line += ": " + (_cut(error, room) if room > len("...") else "...")
    return " ".join((line + said).split())


def _left_out(count: int) -> str:
    return f"... and {count} more not ok (see the logs)"


def _cut(text: str, limit: int) -> str:
    """*text* in at most *limit* UTF-8 bytes, ending with an ellipsis when cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    ellipsis = "..."
    return data[: max(0, limit - len(ellipsis))].decode(errors="ignore") + ellipsis[:limit]
