"""The checks of the arguments that place graceshut's routes, shared by ASGI and WSGI.

Each is made where the argument is given (``install()``, a middleware's constructor),
never when the first request comes: a route that can never match, or a ``Retry-After``
that no client can read, would otherwise be found during a shutdown, when a preStop
hook gets the app's 404 instead of a drain.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from .._core._config import ConfigError, check_flag, resolve_token
from ._responses import check_retry_after


def check_install(
    *,
    shutdown_path: object,
    readiness_path: object,
    liveness_path: object,
    retry_after: object,
    signals: object,
    token: str | None,
    trust_loopback: object,
    backend: object = "asyncio",
) -> None:
    """Check the arguments that ``install()`` and the middlewares have in common.

    *backend* is the WSGI sequence thread's event loop: there a bad one would only fail
    in the background, once the thread has started.

    Raises:
        ConfigError: The first argument that cannot work, named with its value.
    """
    check_routes(
        [
            ("shutdown_path", shutdown_path),
            ("readiness_path", readiness_path),
            ("liveness_path", liveness_path),
        ]
    )
    check_retry_after(retry_after)
    check_flag(signals, "signals")
    if trust_loopback is not None:  # also when no route uses it, as the token
        check_flag(trust_loopback, "trust_loopback")
    if token is not None:  # also when no route uses it: a bad token is a mistake anyway
        resolve_token(token)
    if backend not in ("asyncio", "trio"):
        raise ConfigError(f"backend={backend!r} must be 'asyncio' or 'trio'")
    if backend == "trio" and importlib.util.find_spec("trio") is None:
        raise ConfigError("backend='trio' needs trio installed (pip install trio)")


def check_route_path(path: object, source: str) -> str | None:
    """*path* if a route can be matched on it: ``/`` and more, no query, no space.

    A server hands the middleware the path alone, always starting with ``/``: a route
    on ``shutdown`` or ``/shutdown?wait=0`` is never reached, and a preStop hook that
    calls it would only get the app's 404.

    Raises:
        ConfigError: Anything else, naming *source* and the value.
    """
    if path is None:
        return None
    if not isinstance(path, str):
        raise ConfigError(f"{source}={path!r} must be a path such as '/shutdown', or None")
    if not path.startswith("/"):
        raise ConfigError(f"{source}={path!r} must start with '/' (e.g. {'/' + path!r})")
    if any(c in path for c in "?#") or not path.isprintable() or " " in path:
        raise ConfigError(
            f"{source}={path!r} must be a plain path: no query, fragment, space or "
            "control character (the server matches the path alone)"
        )
    return path


def check_routes(paths: Sequence[tuple[str, object]]) -> None:
    """Check each (argument, path) with `check_route_path`, and that no two are the same.

    Raises:
        ConfigError: A bad path, or two routes on one path, naming the arguments.
    """
    seen: dict[str, str] = {}
    for source, path in paths:
        checked = check_route_path(path, source)
        if checked is None:
            continue
        if checked in seen:
            raise ConfigError(
                f"{source}={checked!r} is also {seen[checked]}: each route needs a path of its own"
            )
        seen[checked] = source
