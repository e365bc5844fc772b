import json
import pathlib

from fastapi import FastAPI

import graceshut
import graceshut.starlette

app = FastAPI()
coordinator = graceshut.Coordinator()  # GRACESHUT_* variables, else 30 s grace period
cache: dict[str, int] = {}


@app.get("/hit/{key}")
async def hit(key: str) -> dict[str, int]:
    cache[key] = cache.get(key, 0) + 1
    return {key: cache[key]}


@coordinator.on_shutdown("flush", timeout=10)
def save_cache(ctx: graceshut.ShutdownContext) -> None:  # sync: runs in a worker thread
    pathlib.Path("cache.json").write_text(json.dumps(cache))


graceshut.starlette.install(app, coordinator)  # drain, /readyz /livez /shutdown, SIGTERM
