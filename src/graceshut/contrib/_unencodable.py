"""Records with a value that has no JSON form: one bad value costs one record.

Part of `graceshut.contrib.spill`, which re-exports `SpillEncodeError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._errors import IntegrationError

if TYPE_CHECKING:
    from .spill import Spilled

logger = logging.getLogger("graceshut")


class SpillEncodeError(IntegrationError, TypeError):
    """Some records had a value with no JSON form: the others were spilled all the same.

    Attributes:
        spilled: What was spilled.
        unencodable: Records left out (each logged at ``ERROR`` with its ``repr``).
    """

    def __init__(self, message: str, *, spilled: Spilled, unencodable: int) -> None:
        super().__init__(message)
        self.spilled = spilled
        self.unencodable = unencodable


class Unencodable:
    """Skips the records that cannot be encoded, so that one bad value loses one record."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.count = 0
        self.first = ""

    def skip(self, encode: Callable[[Any], bytes], records: Iterable[Any]) -> Iterator[bytes]:
        for record in records:
            try:
                yield encode(record)
            except (TypeError, ValueError) as exc:  # ValueError: a circular reference
                self.count += 1
                self.first = self.first or str(exc)
                # The last place this record exists: its repr, for a human to rescue.
                logger.error(  # noqa: TRY400 - a line per record, no traceback each
                    "%s: cannot spill %.2000r: %s",
                    self.stream,
                    record,
                    exc,
                    extra={"spill": self.stream},
                )

    def check(self, spilled: Spilled) -> None:
        if self.count:
            raise SpillEncodeError(
                f"spilled {spilled.records} records to {spilled.to}; {self.count} could not "
                f"be encoded (logged at ERROR): {self.first}",
                spilled=spilled,
                unencodable=self.count,
            )
