"""Serving in one process of a pod: the signal chain and the worker group around it.

The coordinator's `lifespan` is this block: the process's part of serving (SIGTERM and
SIGINT chained to the server's own handlers, membership of the pod's worker group),
kept out of the core, which only runs the sequence.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import anyio

from .._core._deadline import grace_period_from_pod
from ._membership import PodMembership
from ._signals import SignalChain
from ._workers import configured_directory

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._core._coordinator import Coordinator
    from .._core._loop import LoopHandle
    from .._core._run_state import RunState


@contextlib.asynccontextmanager
async def serving(
    coordinator: Coordinator,
    state: RunState,
    loop: LoopHandle,
    on_sibling: Callable[[str, float], None],
    *,
    signals: bool,
    environ: Mapping[str, str] | None,
) -> AsyncIterator[None]:
    """Serve inside this block; leaving it runs (or joins) the shutdown sequence.

    *on_sibling* starts this worker's sequence when a sibling of the pod had the trigger.
    With ``deadline_source="api"``, the pod's own grace period is read once, first.
    """
    chain = SignalChain(coordinator) if signals else None
    try:
        if chain is not None:
            chain.install()
        if coordinator.settings.deadline_source == "api":
            coordinator.settings = await grace_period_from_pod(coordinator.settings, environ)
        state.pod = PodMembership.join()
        if state.pod is not None:
            state.pod.follow(loop, on_sibling)
        yield
        with anyio.CancelScope(shield=True):
            await coordinator.shutdown("lifespan")
    finally:
        if state.pod is not None:
            state.pod.leave()
            state.pod = None
        if chain is not None:
            chain.uninstall()


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse, when the coordinator is built, what the process layer would refuse later.

    Raises:
        ConfigError: ``GRACESHUT_WORKER_DIR`` is a relative path.
    """
    configured_directory(environ)
