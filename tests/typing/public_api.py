"""Type-checked only: the public API as users write it must pass mypy --strict."""

from __future__ import annotations

from starlette.applications import Starlette

import graceshut
import graceshut.asgi
import graceshut.starlette

coordinator = graceshut.Coordinator(grace_period=30, propagation_delay=5)


@coordinator.on_shutdown
async def bare_async() -> None: ...


@coordinator.on_shutdown
def bare_sync() -> None: ...


@coordinator.on_shutdown("release", timeout=2.0)
async def with_context(ctx: graceshut.ShutdownContext) -> None:
    remaining: float = ctx.remaining()
    phase: graceshut.Phase = ctx.phase
    del remaining, phase


@coordinator.on_shutdown(phase=graceshut.Phase.ANNOUNCE, name="notify")
def sync_with_context(ctx: graceshut.ShutdownContext) -> None: ...


# the decorators return the function unchanged
_f: object = bare_async
_g: object = sync_with_context
coordinator.add_handler(bare_sync, phase="report", timeout=1, name="again")


@coordinator.on_report
def on_report(report: graceshut.ShutdownReport) -> None:
    code: int = report.exit_code
    data: dict[str, object] = report.to_dict()
    del code, data


async def main() -> None:
    report: graceshut.ShutdownReport = await coordinator.shutdown("manual")
    outcomes: list[graceshut.Outcome] = [h.outcome for h in report.handlers]
    del outcomes
    async with coordinator.track("job"):
        pass
    async with coordinator.lifespan(signals=False):
        pass


app = Starlette()
graceshut.starlette.install(app, coordinator, token="secret", readiness_path="/ready")
middleware = graceshut.asgi.GracefulShutdownMiddleware(app, coordinator)
