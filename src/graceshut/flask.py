"""One call to wire graceshut into a Flask app (``pip install graceshut[flask]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .wsgi import GracefulShutdownMiddleware

if TYPE_CHECKING:
    from flask import Flask

    from ._core._coordinator import Coordinator

__all__ = ["install"]


def install(app: Flask, coordinator: Coordinator, **options: Any) -> GracefulShutdownMiddleware:
    """Add graceful shutdown to *app*: the drain middleware, the routes, the signals.

    Wraps ``app.wsgi_app`` in `graceshut.wsgi.GracefulShutdownMiddleware` (so Flask's
    own routing, error handlers and ``after_request`` hooks see nothing of it) and
    stores the coordinator as ``app.extensions["graceshut"]``. Under gunicorn, run with
    ``-c python:graceshut.gunicorn``.

    Args:
        app: The Flask app.
        coordinator: The coordinator that runs the sequence.
        **options: Passed to `graceshut.wsgi.GracefulShutdownMiddleware`: ``token``,
            ``shutdown_path``, ``readiness_path``, ``liveness_path``, ``retry_after``,
            ``signals``, ``backend``.

    Returns:
        The middleware, now ``app.wsgi_app``.

    Example::

        app = Flask(__name__)
        coordinator = graceshut.Coordinator()
        graceshut.flask.install(app, coordinator)
    """
    if "graceshut" in app.extensions:
        raise RuntimeError("graceshut is already installed on this Flask app")
    middleware = GracefulShutdownMiddleware(app.wsgi_app, coordinator, **options)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    app.extensions["graceshut"] = coordinator
    return middleware
