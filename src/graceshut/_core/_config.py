"""Settings from arguments or ``GRACESHUT_*`` environment variables, checked up front."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping

DEFAULT_GRACE_PERIOD = 30.0
DEFAULT_SAFETY_MARGIN = 1.0
DEFAULT_PROPAGATION_DELAY = 5.0
DEFAULT_STREAM_GRACE = 5.0
DEFAULT_PROPAGATION_FLOOR = 2.0
DEFAULT_PROPAGATION_CAP = 15.0
DEFAULT_QUIET_WINDOW = 1.0
READINESS_ON_TERMINATE = ("fail", "serve")

ENV_GRACE_PERIOD = "GRACESHUT_GRACE_PERIOD"
ENV_SAFETY_MARGIN = "GRACESHUT_SAFETY_MARGIN"
ENV_PROPAGATION_DELAY = "GRACESHUT_PROPAGATION_DELAY"
ENV_STREAM_GRACE = "GRACESHUT_STREAM_GRACE"
ENV_PROPAGATION_FLOOR = "GRACESHUT_PROPAGATION_FLOOR"
ENV_PROPAGATION_CAP = "GRACESHUT_PROPAGATION_CAP"
ENV_QUIET_WINDOW = "GRACESHUT_QUIET_WINDOW"
ENV_READINESS_ON_TERMINATE = "GRACESHUT_READINESS_ON_TERMINATE"
ENV_TOKEN = "GRACESHUT_TOKEN"  # noqa: S105 - the name of a variable, not a secret
ENV_DEADLINE_SOURCE = "GRACESHUT_DEADLINE_SOURCE"
ENV_API_TIMEOUT = "GRACESHUT_API_TIMEOUT"

DEADLINE_SOURCES = ("config", "api")
DEFAULT_API_TIMEOUT = 0.5


class ConfigError(ValueError):
    """A setting is invalid; the message names the argument or variable and the value."""


@dataclasses.dataclass(frozen=True)
class EnvDefault:
    """A default that the matching ``GRACESHUT_*`` variable overrides; see `env_default`."""

    value: float


def env_default(value: float) -> EnvDefault:
    """Give a setting a default of your own that the environment may still override.

    A plain argument always wins over ``GRACESHUT_*``; wrapped in `env_default`, it is
    used only when the variable is not set, and a bad variable is still a `ConfigError`
    that names it. The argument itself is checked like any other setting.

    Example::

        coordinator = graceshut.Coordinator(
            grace_period=graceshut.env_default(45),  # GRACESHUT_GRACE_PERIOD, else 45
        )
    """
    return EnvDefault(value)


Seconds = float | EnvDefault | None
#: The propagation delay: seconds, or ``"auto"`` (ends on evidence, see `Settings`).
Delay = float | str | EnvDefault | None
AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved timing of a shutdown, in seconds."""

    grace_period: float
    safety_margin: float
    propagation_delay: float
    stream_grace: float = DEFAULT_STREAM_GRACE
    """Seconds a response still streaming when the drain begins gets before it is ended."""
    propagation_auto: bool = False
    """``propagation_delay="auto"``: the delay ends on evidence that routers stopped
    sending, never before `propagation_floor`, and at the latest after
    `propagation_delay`, which is then the cap."""
    propagation_floor: float = DEFAULT_PROPAGATION_FLOOR
    """With ``auto``: the delay never ends before this many seconds."""
    quiet_window: float = DEFAULT_QUIET_WINDOW
    """With ``auto``: seconds without a new request that end the delay early."""
    readiness_on_terminate: str = "fail"
    """``fail``: readiness fails at the trigger; ``serve``: at the start of the drain."""
    deadline_source: str = "config"
    """``config``: the deadline is the first trigger + the grace period - the margin;
    ``api``: the pod's ``deletionTimestamp`` from the API server, when it is sooner."""
    api_timeout: float = DEFAULT_API_TIMEOUT
    """Seconds one read of the pod from the API server may take."""
    grace_period_source: str = "default"
    """Where the grace period came from: the argument's name, the variable's, the
    pod's spec (``spec.terminationGracePeriodSeconds``) or ``default``."""

    @property
    def budget(self) -> float:
        """Seconds from the first trigger to the deadline."""
        return self.grace_period - self.safety_margin


def resolve_settings(
    grace_period: Seconds,
    safety_margin: Seconds,
    propagation_delay: Delay,
    environ: Mapping[str, str] | None = None,
    stream_grace: Seconds = None,
    *,
    propagation_floor: Seconds = None,
    propagation_cap: Seconds = None,
    quiet_window: Seconds = None,
    readiness_on_terminate: str | None = None,
    deadline_source: str | None = None,
    api_timeout: Seconds = None,
) -> Settings:
    """Merge arguments, environment and defaults, and reject what cannot work."""
    env = os.environ if environ is None else environ
    grace = _seconds("grace_period", grace_period, ENV_GRACE_PERIOD, DEFAULT_GRACE_PERIOD, env)
    margin = _seconds("safety_margin", safety_margin, ENV_SAFETY_MARGIN, DEFAULT_SAFETY_MARGIN, env)
    auto = _is_auto(propagation_delay, env)
    floor = _seconds(
        "propagation_floor",
        propagation_floor,
        ENV_PROPAGATION_FLOOR,
        DEFAULT_PROPAGATION_FLOOR,
        env,
    )
    cap = _seconds(
        "propagation_cap", propagation_cap, ENV_PROPAGATION_CAP, DEFAULT_PROPAGATION_CAP, env
    )
    quiet = _seconds("quiet_window", quiet_window, ENV_QUIET_WINDOW, DEFAULT_QUIET_WINDOW, env)
    if auto:
        if floor.value > cap.value:
            raise ConfigError(
                f"{floor.source}={floor.raw!r} must not be greater than "
                f"{cap.source}={cap.raw!r}: the delay could never end"
            )
        if quiet.value <= 0:
            raise ConfigError(f"{quiet.source}={quiet.raw!r} must be greater than 0 seconds")
        delay = cap
    else:
        delay = _seconds(
            "propagation_delay",
            propagation_delay,
            ENV_PROPAGATION_DELAY,
            DEFAULT_PROPAGATION_DELAY,
            env,
        )
    stream = _seconds("stream_grace", stream_grace, ENV_STREAM_GRACE, DEFAULT_STREAM_GRACE, env)
    readiness = _choice(
        "readiness_on_terminate",
        readiness_on_terminate,
        ENV_READINESS_ON_TERMINATE,
        READINESS_ON_TERMINATE,
        env,
    )
    if grace.value <= 0:
        raise ConfigError(f"{grace.source}={grace.raw!r} must be greater than 0 seconds")
    if margin.value >= grace.value:
        raise ConfigError(
            f"{margin.source}={margin.raw!r} must be smaller than "
            f"{grace.source}={grace.raw!r}: nothing would be left for the shutdown"
        )
    source = resolve_deadline_source(deadline_source, env)
    timeout = _seconds("api_timeout", api_timeout, ENV_API_TIMEOUT, DEFAULT_API_TIMEOUT, env)
    if timeout.value <= 0:
        raise ConfigError(f"{timeout.source}={timeout.raw!r} must be greater than 0 seconds")
    return Settings(
        grace.value,
        margin.value,
        delay.value,
        stream.value,
        propagation_auto=auto,
        propagation_floor=floor.value if auto else DEFAULT_PROPAGATION_FLOOR,
        quiet_window=quiet.value if auto else DEFAULT_QUIET_WINDOW,
        readiness_on_terminate=readiness,
        deadline_source=source,
        api_timeout=timeout.value,
        grace_period_source="default" if grace.default else grace.source,
    )


def _is_auto(given: Delay, env: Mapping[str, str]) -> bool:
    """Whether the propagation delay is ``"auto"``, from the argument or the variable."""
    if isinstance(given, EnvDefault):
        given = None if ENV_PROPAGATION_DELAY in env else given.value
    if given is None:
        raw = env.get(ENV_PROPAGATION_DELAY, "")
        return raw.strip().lower() == AUTO
    return isinstance(given, str) and given.strip().lower() == AUTO


def _choice(
    argument: str,
    given: str | None,
    variable: str,
    choices: tuple[str, ...],
    env: Mapping[str, str],
) -> str:
    source, raw = (argument, given) if given is not None else (variable, env.get(variable))
    if raw is None:
        return choices[0]
    value = str(raw).strip().lower()
    if value not in choices:
        raise ConfigError(f"{source}={raw!r} must be one of: {', '.join(choices)}")
    return value


def resolve_deadline_source(given: str | None, env: Mapping[str, str]) -> str:
    """``config`` or ``api``, from the argument, else ``GRACESHUT_DEADLINE_SOURCE``."""
    raw: object
    if given is not None:
        source, raw = "deadline_source", given
    else:
        source, raw = ENV_DEADLINE_SOURCE, env.get(ENV_DEADLINE_SOURCE)
    if raw is None:
        return "config"
    value = raw.strip().lower() if isinstance(raw, str) else None
    if value is None or value not in DEADLINE_SOURCES:
        raise ConfigError(
            f"{source}={raw!r} is not a deadline source: use 'config' (the grace period "
            "as configured) or 'api' (the pod's deletionTimestamp from the API server)"
        )
    return value


def resolve_token(token: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the shutdown route's bearer token from the argument or ``GRACESHUT_TOKEN``.

    An empty or blank token is an error rather than "no token": it would otherwise
    silently turn the route over to the pod secret, or worse, accept an empty bearer.
    """
    env = os.environ if environ is None else environ
    source, value = ("token", token) if token is not None else (ENV_TOKEN, env.get(ENV_TOKEN))
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{source}={value!r} must be a string")
    if not value.strip():
        raise ConfigError(f"{source} is set but empty: set a secret token, or unset it")
    if value != value.strip() or not all(
        c.isascii() and c.isprintable() and c != " " for c in value
    ):
        raise ConfigError(
            f"{source} must be printable ASCII without spaces (it travels in an HTTP header)"
        )
    return value


@dataclasses.dataclass(frozen=True)
class _Value:
    source: str
    raw: object
    value: float
    default: bool = False


def _seconds(
    argument: str, given: Delay, variable: str, default: float, env: Mapping[str, str]
) -> _Value:
    raw: object
    if isinstance(given, EnvDefault):
        given = None if variable in env else given.value
    if given is not None:
        source, raw = argument, given
    elif variable in env:
        source, raw = variable, env[variable]
    else:
        return _Value(argument, default, default, default=True)
    if isinstance(raw, bool):
        raise ConfigError(f"{source}={raw!r} is not a number of seconds")
    try:
        value = float(str(raw))
    except (TypeError, ValueError):
        raise ConfigError(f"{source}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{source}={raw!r} must be a finite number of seconds, 0 or more")
    return _Value(source, raw, value)


def check_flag(value: object, source: str) -> bool:
    """*value* if it is True or False: ``signals="no"`` would otherwise count as on.

    Raises:
        ConfigError: Anything else, naming *source* and the value.
    """
    if not isinstance(value, bool):
        raise ConfigError(f"{source}={value!r} must be True or False")
    return value
