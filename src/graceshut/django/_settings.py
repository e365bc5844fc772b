"""``settings.GRACESHUT``: the coordinator's timings and the routes' options."""

from __future__ import annotations

import threading
from typing import Any

from .._core._coordinator import Coordinator
from .._http._arguments import check_routes
from .._http._responses import check_retry_after

#: Keys of ``settings.GRACESHUT`` and their defaults (None: the environment, else
#: graceshut's default, as for `graceshut.Coordinator`).
DEFAULTS: dict[str, Any] = {
    "GRACE_PERIOD": None,
    "SAFETY_MARGIN": None,
    "PROPAGATION_DELAY": None,
    "TOKEN": None,
    "SHUTDOWN_PATH": "/shutdown",
    "READINESS_PATH": "/readyz",
    "LIVENESS_PATH": "/livez",
    "RETRY_AFTER": None,
    "TRUST_LOOPBACK": None,
    "ADMIN_ADDRESS": None,
}

_PATHS = ("SHUTDOWN_PATH", "READINESS_PATH", "LIVENESS_PATH")

_lock = threading.Lock()
_coordinator: Coordinator | None = None


def options() -> dict[str, Any]:
    """``settings.GRACESHUT`` merged over the defaults.

    Raises:
        django.core.exceptions.ImproperlyConfigured: Not a dict, or an unknown key.
        graceshut.ConfigError: A path or ``RETRY_AFTER`` that cannot work, naming the key.
    """
    from django.conf import settings  # noqa: PLC0415 - optional dependency
    from django.core.exceptions import ImproperlyConfigured  # noqa: PLC0415

    given = getattr(settings, "GRACESHUT", {})
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"settings.GRACESHUT must be a dict, not {type(given).__name__}")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"settings.GRACESHUT has unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(DEFAULTS)}"
        )
    merged = {**DEFAULTS, **given}
    # Named as the settings are, not as the arguments they become.
    check_routes([(f"GRACESHUT[{key!r}]", merged[key]) for key in _PATHS])
    check_retry_after(merged["RETRY_AFTER"], "GRACESHUT['RETRY_AFTER']")
    return merged


def get_coordinator() -> Coordinator:
    """The project's coordinator, built once from ``settings.GRACESHUT``.

    Register handlers on it from an ``AppConfig.ready()``.

    Raises:
        django.core.exceptions.ImproperlyConfigured: A bad ``settings.GRACESHUT``.
        graceshut.ConfigError: A bad value, naming the setting or variable.
    """
    global _coordinator  # noqa: PLW0603 - one coordinator per process, as settings
    with _lock:
        if _coordinator is None:
            config = options()
            _coordinator = Coordinator(
                config["GRACE_PERIOD"], config["SAFETY_MARGIN"], config["PROPAGATION_DELAY"]
            )
        return _coordinator
