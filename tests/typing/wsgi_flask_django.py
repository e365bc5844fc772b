"""Type-checked only: the WSGI, Flask and Django entry points as users call them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

import graceshut
import graceshut.django
import graceshut.flask
import graceshut.gunicorn
from graceshut.wsgi import GracefulShutdownMiddleware


def plain(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


coordinator = graceshut.Coordinator()
wrapped: GracefulShutdownMiddleware = GracefulShutdownMiddleware(
    plain, coordinator, token="t", readiness_path=None, retry_after=3, backend="trio"
)
app = Flask(__name__)
installed: GracefulShutdownMiddleware = graceshut.flask.install(app, coordinator, signals=False)
django_coordinator: graceshut.Coordinator = graceshut.django.get_coordinator()
hooks = (graceshut.gunicorn.post_worker_init, graceshut.gunicorn.worker_exit)
