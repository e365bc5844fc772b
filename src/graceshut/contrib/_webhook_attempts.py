"""One webhook request's outcome, and the words for the log and the error.

Part of `graceshut.contrib.webhook`.
"""

from __future__ import annotations

import dataclasses
import itertools

import httpx

MAX_BACKOFF = 5.0
"""The longest wait between two attempts, in seconds."""


@dataclasses.dataclass(frozen=True)
class Attempt:
    """How one request ended, and whether (and when) another is worth it."""

    status: int | None
    failure: str | None
    retryable: bool = False
    retry_after: float = 0.0


def redact(url: str) -> str:
    """The URL without credentials, query or fragment: what is safe to log."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def retry_after_seconds(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (the date form is ignored)."""
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        return 0.0
    return seconds if 0 <= seconds <= MAX_BACKOFF * 2 else 0.0


def describe(method: str, url: str, tried: int, attempts: list[Attempt], note: str) -> str:
    """One line for the error: how each attempt ended (repeats counted), then *note*."""
    parts = []
    for failure, group in itertools.groupby(str(a.failure) for a in attempts):
        count = len(list(group))
        parts.append(f"{failure} (x{count})" if count > 1 else failure)
    if note:
        parts.append(note)
    return f"{method} {url} failed after {attempts_text(tried)}: {'; '.join(parts)}"


def attempts_text(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"
