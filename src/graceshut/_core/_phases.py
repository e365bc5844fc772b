"""The five phases of a shutdown, in the order they run."""

from __future__ import annotations

import enum


class Phase(str, enum.Enum):
    """A step of the shutdown sequence; handlers of one phase run concurrently.

    The phases run in definition order. A phase may be given as the enum member or
    its string name (``"flush"``) wherever graceshut takes one.
    """

    ANNOUNCE = "announce"
    """Readiness fails; tell load balancers and service discovery."""
    DRAIN = "drain"
    """In-flight requests finish; stop consumers and background jobs."""
    FLUSH = "flush"
    """Write caches and buffers to durable storage."""
    RELEASE = "release"
    """Release distributed locks and leases; dispose connection pools."""
    REPORT = "report"
    """Final logs, metrics and the termination message."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: Phase | str) -> Phase:
        """Return the phase named by *value*, or raise `ValueError` listing the valid names."""
        if isinstance(value, Phase):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown phase {value!r}: expected one of {names}") from None


PHASES: tuple[Phase, ...] = tuple(Phase)
