"""The errors of every integration, one family: ``except IntegrationError`` catches them all.

A handler that fails raises one of these, and the report records its message; the
attributes say what is left over (``pending``: rows or entries not written; ``failed``:
things that may still be held), the same words in every integration.
"""

from __future__ import annotations


def describe_error(exc: BaseException) -> str:
    """``Type: first line`` of *exc*, for reports and logs.

    Drivers append the statement and the row values after the first line (SQLAlchemy
    does): those stay out of what graceshut reports.
    """
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


class IntegrationError(RuntimeError):
    """Base of every error raised by a `graceshut.contrib` integration."""


class FlushError(IntegrationError):
    """A flush wrote part of its data, then failed; the rest is still in memory.

    Attributes:
        written: Rows or entries written before the failure.
        pending: Rows or entries not written (spilled too, when a spill was set).
    """

    def __init__(self, message: str, *, written: int, pending: int) -> None:
        super().__init__(message)
        self.written = written
        self.pending = pending


class BufferFlushError(FlushError):
    """A batch failed (or the deadline came): it and every later row stay in the buffer.

    Attributes:
        written: Rows written by this flush before it stopped.
        pending: Rows left in the buffer.
    """


class ReleaseError(IntegrationError):
    """Some releases failed at shutdown; every other one was attempted.

    Things that were no longer held (an expired lock, a revoked lease) are not counted:
    they are not held.

    Attributes:
        failed: ``"<name>: <error>"`` for each thing that may still be held.
    """

    def __init__(self, message: str, failed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.failed = failed
