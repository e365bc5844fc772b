"""etcd leases and locks revoked at shutdown (aetcd, asyncio).

Install with ``pip install 'graceshut[etcd]'``. In etcd, session keys (a service
registration, a leader key, a lock) live under a lease and vanish when it expires. A
pod that dies leaves them in place for the lease's whole TTL; `EtcdLeases` revokes the
leases the app still holds in the ``release`` phase, and revoking a lease deletes
every key attached to it at once, atomically::

    leases = EtcdLeases(coordinator, client)

    lease = await leases.grant(ttl=30)
    await client.put(b"/services/api/pod-a", b"10.0.0.7:8000", lease=lease)

    async with leases.lock(b"/locks/nightly-import", ttl=60):
        ...  # held: its lease is revoked at shutdown if the block is still running

What it guarantees:

- A lease is tracked from `~EtcdLeases.grant` (or `~EtcdLeases.track`) to
  `~EtcdLeases.revoke` or the shutdown; a lock's lease from a successful ``acquire`` to
  its ``release``.
- A lock is released by revoking its lease, one round trip: the key goes with the
  lease, and aetcd's own ``release`` would leave the lease alive. A key that another
  owner holds now lives under that owner's lease, so a revoke can never delete it.
- A lease that had already expired is reported in a warning, not as a failure: its keys
  are gone, which is what the release is for. Real errors (server down or too slow)
  fail the handler, after every other lease was attempted.
- Keeping leases alive while the app runs (``lease.refresh()``) stays the app's job.

aetcd is an asyncio library: these helpers need the asyncio event loop.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any

import anyio

from .._core._phases import Phase
from ._errors import ReleaseError
from ._release import Terms, release_all

try:
    import aetcd  # type: ignore[import-untyped]  # aetcd ships no type information
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("graceshut.contrib.etcd needs aetcd: pip install 'graceshut[etcd]'") from exc

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is 3.11+; only read by type checkers

    from .._core._context import ShutdownContext
    from .._core._coordinator import Coordinator

__all__ = ["EtcdLeases", "ReleaseError"]

logger = logging.getLogger("graceshut")

#: Seconds to revoke the lease of a lost try before leaving it to its TTL.
_REVOKE_TIMEOUT = 2.0

_TERMS = Terms(
    things="etcd leases",
    done="revoked",
    gone="expired",
    gone_words="already expired",
    not_done="not revoked",
    still_held="may still be alive",
)


class _TrackedLock(aetcd.Lock):  # type: ignore[misc]  # aetcd is untyped
    """An `aetcd.Lock` whose lease is tracked by an `EtcdLeases` while held."""

    def __init__(
        self, leases: EtcdLeases, key: bytes, ttl: int, acquire_timeout: float | None
    ) -> None:
        self._lease: aetcd.Lease | None = None
        self._granted: aetcd.Lease | None = None
        super().__init__(leases.client, key, ttl)
        self._leases = leases
        self._acquire_timeout = acquire_timeout

    @property
    def lease(self) -> aetcd.Lease | None:
        """The lease the lock's key lives under, while held."""
        return self._lease

    @lease.setter
    def lease(self, lease: aetcd.Lease | None) -> None:
        self._lease = lease
        if lease is not None:
            self._granted = lease

    async def _try_acquire(self, *args: Any, **kwargs: Any) -> bool:
        # aetcd grants a lease for every try and forgets it when the key is taken:
        # revoke it, or each try of a contended lock leaves a lease alive for its TTL.
        self._granted = None
        try:
            if await super()._try_acquire(*args, **kwargs):
                return True
        except BaseException:
            # The transaction failed after the grant: aetcd kept the lease as the lock's,
            # but the lock is not held (and the key, if it was written, goes with it).
            self._lease = None
            await self._revoke_granted()
            raise
        await self._revoke_granted()
        return False

    async def _revoke_granted(self) -> None:
        granted, self._granted = self._granted, None
        if granted is None:
            return
        # Best effort, and brief even when the acquire is being cancelled: the lease's
        # TTL is the fallback.
        with anyio.move_on_after(_REVOKE_TIMEOUT, shield=True), contextlib.suppress(Exception):
            await granted.revoke()

    async def acquire(self, *args: Any, **kwargs: Any) -> bool:
        """Acquire the lock as aetcd does (its arguments, passed on); then its lease is tracked."""
        if not await super().acquire(*args, **kwargs):
            return False
        self._leases.track(self.lease, name=f"lock {self.key.decode(errors='replace')}")
        return True

    async def release(self) -> bool:
        """Revoke the lock's lease, which deletes its key; then it is no longer tracked.

        Returns:
            False when the lock was not held: never acquired, or its lease had expired.
        """
        lease, self.lease = self.lease, None
        if lease is None:
            return False
        try:
            return await self._leases.revoke(lease)
        except BaseException:
            self.lease = lease  # still held: a later release (or the shutdown) retries
            raise

    async def __aenter__(self) -> Self:
        if not await self.acquire(self._acquire_timeout):
            raise TimeoutError(
                f"etcd lock {self.key!r} not acquired within {self._acquire_timeout}s"
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()


class EtcdLeases:
    """Tracks the app's etcd leases (and locks) and revokes them in the ``release`` phase.

    Registers one handler on construction. At shutdown every tracked lease is revoked,
    all concurrently over the client's one gRPC channel, within the handler's timeout.
    See the module docs for what is reported.

    Args:
        coordinator: Where to register the handler.
        client: The `aetcd.Client` that grants and revokes the leases.
        timeout: Seconds the handler may take.
        name: The handler's name in logs and the report.
        phase: The phase it runs in; ``release`` by default.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        client: aetcd.Client,
        *,
        timeout: float = 5.0,
        name: str = "etcd-leases",
        phase: Phase | str = Phase.RELEASE,
    ) -> None:
        self.client = client
        self.name = name
        self._leases: dict[int, tuple[aetcd.Lease, str]] = {}
        self._closed = False
        coordinator.add_handler(self.release_all, phase=phase, timeout=timeout, name=name)

    @property
    def held(self) -> tuple[int, ...]:
        """IDs of the leases that the shutdown would revoke now."""
        return tuple(self._leases)

    async def grant(self, ttl: int, *, name: str | None = None) -> aetcd.Lease:
        """Grant a lease of *ttl* seconds and track it until revoked.

        Args:
            ttl: Seconds the lease lives unless refreshed.
            name: The name in logs; ``lease <hex id>`` (as etcdctl shows it) by default.

        Returns:
            The `aetcd.Lease`: attach keys to it with ``client.put(..., lease=lease)``.
        """
        return self.track(await self.client.lease(ttl), name=name)

    def track(self, lease: aetcd.Lease, *, name: str | None = None) -> aetcd.Lease:
        """Revoke *lease*, granted elsewhere, at shutdown; returns it unchanged."""
        label = name or f"lease {lease.id:x}"
        self._leases[lease.id] = (lease, label)
        if self._closed:
            logger.warning(
                "%s: %s granted after the release phase began: it is not revoked at shutdown "
                "and lives until its TTL runs out",
                self.name,
                label,
                extra={
                    "handler": self.name,
                    "lease": lease.id,
                    "lock": label,
                    "outcome": "untracked",
                },
            )
        return lease

    def untrack(self, lease: aetcd.Lease) -> bool:
        """Stop tracking *lease* without revoking it; False if it was not tracked."""
        return self._leases.pop(lease.id, None) is not None

    async def revoke(self, lease: aetcd.Lease) -> bool:
        """Revoke *lease* now, deleting every key under it, and stop tracking it.

        Returns:
            False when the lease had already expired (or been revoked).

        Raises:
            aetcd.ClientError: etcd could not be reached; the lease stays tracked.
        """
        entry = self._leases.pop(lease.id, None)
        try:
            await lease.revoke()
        except aetcd.ClientError as exc:
            if _lease_not_found(exc):
                return False
            self._retrack(lease.id, entry)
            raise
        except BaseException:
            self._retrack(lease.id, entry)
            raise
        return True

    def lock(
        self, key: str | bytes, ttl: int = 60, *, acquire_timeout: float | None = 10
    ) -> aetcd.Lock:
        """A lock like ``client.lock(key, ttl)``, whose lease is tracked while held.

        Acquire and release it as an `aetcd.Lock`, or use ``async with``, which, unlike
        aetcd's, raises `TimeoutError` when the lock was not acquired in time instead
        of running the block without it. Its ``release`` revokes the lease.

        Args:
            key: The lock's key.
            ttl: Seconds the lock lives unless refreshed (``lock.refresh()``).
            acquire_timeout: Longest wait in ``async with``; None waits forever.
        """
        raw = key.encode() if isinstance(key, str) else key
        return _TrackedLock(self, raw, ttl, acquire_timeout)

    async def release_all(self, ctx: ShutdownContext) -> None:
        """Revoke every tracked lease; the handler registered on construction.

        Raises:
            ReleaseError: Some revokes failed; every other one was attempted.
        """
        entries = list(self._leases.items())
        self._leases.clear()
        self._closed = True
        fields: dict[str, Any] = {"handler": self.name, "phase": ctx.phase.value}
        if not entries:
            ctx.logger.debug("%s: no lease held", self.name, extra={**fields, "outcome": "ok"})
            return
        await release_all(
            [
                (label, functools.partial(self._revoke_one, lease, label, ctx, fields))
                for lease, label in dict(entries).values()
            ],
            handler=self.name,
            ctx=ctx,
            fields=fields,
            terms=_TERMS,
        )

    async def _revoke_one(
        self, lease: aetcd.Lease, label: str, ctx: ShutdownContext, fields: dict[str, Any]
    ) -> tuple[str, str | None]:
        """Revoke one lease and log how it went; raises nothing but cancellation."""
        extra = {**fields, "lease": lease.id, "lock": label}
        try:
            await lease.revoke()
        except Exception as exc:
            if isinstance(exc, aetcd.ClientError) and _lease_not_found(exc):
                ctx.logger.warning(
                    "%s: %s had already expired: its keys were gone",
                    self.name,
                    label,
                    extra={**extra, "outcome": "expired"},
                )
                return "expired", None
            error = f"{type(exc).__name__}: {exc}"
        else:
            ctx.logger.debug(
                "%s: revoked %s", self.name, label, extra={**extra, "outcome": "revoked"}
            )
            return "revoked", None
        # One line per lease, no traceback: a server that is down fails them all alike.
        ctx.logger.error(
            "%s: %s not revoked: %s",
            self.name,
            label,
            error,
            extra={**extra, "outcome": "error", "error": error},
        )
        return "error", error

    def _retrack(self, lease_id: int, entry: tuple[aetcd.Lease, str] | None) -> None:
        if entry is not None and not self._closed:
            self._leases[lease_id] = entry


def _lease_not_found(exc: BaseException) -> bool:
    """Whether *exc* is etcd's gRPC NOT_FOUND for a lease that expired or was revoked."""
    code = getattr(exc.__cause__, "code", None)
    if callable(code) and getattr(code(), "name", None) == "NOT_FOUND":
        return True
    return "lease not found" in str(exc)
