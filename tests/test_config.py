"""Settings from arguments, `env_default` and ``GRACESHUT_*`` variables."""

from __future__ import annotations

import pytest

import graceshut
from graceshut._core._config import (
    ENV_GRACE_PERIOD,
    ENV_PROPAGATION_DELAY,
    ENV_SAFETY_MARGIN,
    ENV_TOKEN,
    resolve_settings,
    resolve_token,
)

SECONDS = [
    ("grace_period", ENV_GRACE_PERIOD),
    ("safety_margin", ENV_SAFETY_MARGIN),
    ("propagation_delay", ENV_PROPAGATION_DELAY),
]
DEFAULTS = {"grace_period": 30.0, "safety_margin": 1.0, "propagation_delay": 5.0}


def settings(environ: dict[str, str] | None = None, **given: object) -> graceshut.Coordinator:
    return graceshut.Coordinator(**given, environ=environ or {})  # type: ignore[arg-type]


def test_defaults_without_arguments_or_variables() -> None:
    """Nothing given and nothing set: 30 s grace period, 1 s margin, 5 s delay."""
    s = settings().settings
    assert (s.grace_period, s.safety_margin, s.propagation_delay) == (30.0, 1.0, 5.0)
    assert s.budget == 29.0


@pytest.mark.parametrize(("argument", "variable"), SECONDS)
def test_each_variable_is_read(argument: str, variable: str) -> None:
    """Every ``GRACESHUT_*`` seconds variable sets its setting when no argument is given."""
    s = settings({variable: "3.5"}).settings
    assert getattr(s, argument) == 3.5


@pytest.mark.parametrize(("argument", "variable"), SECONDS)
def test_an_argument_beats_the_variable(argument: str, variable: str) -> None:
    """A plain argument wins over the variable."""
    s = settings({variable: "3.5"}, **{argument: 2.5}).settings
    assert getattr(s, argument) == 2.5


@pytest.mark.parametrize(("argument", "variable"), SECONDS)
def test_env_default_yields_to_the_variable(argument: str, variable: str) -> None:
    """`env_default` is used without the variable, and the variable wins when it is set."""
    default = graceshut.env_default(2.75)
    assert getattr(settings(**{argument: default}).settings, argument) == 2.75
    assert getattr(settings({variable: "3.5"}, **{argument: default}).settings, argument) == 3.5


@pytest.mark.parametrize(("argument", "variable"), SECONDS)
@pytest.mark.parametrize("bad", ["abc", "", "-1", "nan", "inf", "1s", "0x10"])
def test_a_bad_variable_is_named_in_the_error(argument: str, variable: str, bad: str) -> None:
    """A bad value in a variable is a ConfigError naming the variable and the value."""
    with pytest.raises(graceshut.ConfigError) as caught:
        settings({variable: bad})
    assert variable in str(caught.value)
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize(("argument", "variable"), SECONDS)
def test_a_bad_variable_is_named_through_env_default(argument: str, variable: str) -> None:
    """`env_default` keeps the error that names the variable, not the argument."""
    with pytest.raises(graceshut.ConfigError, match=variable):
        settings({variable: "soon"}, **{argument: graceshut.env_default(1)})


@pytest.mark.parametrize(("argument", "variable"), SECONDS)
@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), True, "x"])
def test_a_bad_argument_is_named_in_the_error(argument: str, variable: str, bad: object) -> None:
    """A bad argument (also inside `env_default`) is a ConfigError naming the argument."""
    for given in (bad, graceshut.env_default(bad)):  # type: ignore[arg-type]
        with pytest.raises(graceshut.ConfigError) as caught:
            settings(**{argument: given})
        assert str(caught.value).startswith(f"{argument}=")
        assert variable not in str(caught.value)


def test_a_grace_period_of_zero_is_refused() -> None:
    """No time at all for the shutdown is an error, named after its source."""
    with pytest.raises(graceshut.ConfigError, match=f"{ENV_GRACE_PERIOD}='0'"):
        settings({ENV_GRACE_PERIOD: "0"})


def test_a_margin_as_large_as_the_grace_period_is_refused() -> None:
    """A margin that leaves nothing names both settings."""
    with pytest.raises(graceshut.ConfigError) as caught:
        settings({ENV_GRACE_PERIOD: "2"}, safety_margin=2)
    assert ENV_GRACE_PERIOD in str(caught.value)
    assert "safety_margin" in str(caught.value)


def test_numbers_in_strings_and_integers_are_accepted() -> None:
    """Whole numbers, decimals and exponents all read as seconds."""
    s = resolve_settings(None, None, None, {ENV_GRACE_PERIOD: " 45 ", ENV_SAFETY_MARGIN: "1e0"})
    assert (s.grace_period, s.safety_margin) == (45.0, 1.0)
    assert resolve_settings(12, None, 0, {}).propagation_delay == 0.0


def test_the_token_comes_from_the_argument_or_the_variable() -> None:
    """`token=` beats ``GRACESHUT_TOKEN``; without either there is none."""
    assert resolve_token(None, {}) is None
    assert resolve_token(None, {ENV_TOKEN: "from-env"}) == "from-env"
    assert resolve_token("from-arg", {ENV_TOKEN: "from-env"}) == "from-arg"


@pytest.mark.parametrize("bad", ["", "   ", " padded", "two words", "tab\there", "caf\u00e9"])
def test_a_bad_token_names_its_source(bad: str) -> None:
    """An empty or non-header-safe token is an error naming the variable or the argument."""
    with pytest.raises(graceshut.ConfigError, match=ENV_TOKEN):
        resolve_token(None, {ENV_TOKEN: bad})
    with pytest.raises(graceshut.ConfigError, match=r"^token"):
        resolve_token(bad, {})
