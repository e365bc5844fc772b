"""Property tests: any value of install()'s and the command line's arguments is either
accepted or refused with an error that names the argument; never a traceback, never a
shutdown started."""

from __future__ import annotations

import argparse
import contextlib
import io
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

import graceshut.starlette
from graceshut import ConfigError, Coordinator
from graceshut.cli import build_parser
from graceshut.cli._types import check_url
from graceshut.simulate import _preflight
from graceshut.simulate._plan import UsageError, build_plan

FUZZ = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
)

good_path = st.from_regex(r"/[A-Za-z0-9_.~/-]{0,16}", fullmatch=True)
bad_path = st.one_of(
    st.text(max_size=12).filter(lambda t: not t.startswith("/")),
    st.tuples(good_path, st.sampled_from("?# \n\t\x00"), st.text(max_size=4)).map("".join),
    st.integers(),
    st.binary(max_size=4),
)
good_token = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
)
bad_token = st.one_of(
    st.sampled_from(["", " ", "\t", "two words", " lead", "trail ", "é-non-ascii", "tab\there"]),
    st.integers(),
)
good_admin = st.one_of(
    st.integers(1, 65535).map(str),
    st.integers(1, 65535).map(lambda p: f"127.0.0.1:{p}"),
    st.integers(1, 65535).map(lambda p: f"[::1]:{p}"),
    st.from_regex(r"unix:/[a-z]{1,8}/[a-z]{1,8}\.sock", fullmatch=True),
)
bad_admin = st.one_of(
    st.from_regex(r"[a-z]{1,8}", fullmatch=True).filter(lambda t: t != "off"),
    st.integers(65536, 10**6).map(str),
    st.sampled_from(["[::1", "host:", ":80", "unix:relative.sock", "12²", "127.0.0.1:port"]),
    st.integers(),
)
good_retry_after = st.one_of(st.none(), st.integers(0, 10**6))
bad_retry_after = st.one_of(
    st.integers(max_value=-1),
    st.booleans(),
    st.floats(),
    st.text(max_size=6),
)
bad_flag = st.one_of(st.integers(), st.text(max_size=5), st.floats())

BAD = {
    "shutdown_path": bad_path,
    "readiness_path": bad_path,
    "liveness_path": bad_path,
    "retry_after": bad_retry_after,
    "token": bad_token,
    "admin_address": bad_admin,
    "signals": bad_flag,
    "trust_loopback": bad_flag,
}


def install(**arguments: Any) -> tuple[Starlette, Coordinator, graceshut.starlette.Installation]:
    app = Starlette()
    coordinator = Coordinator(grace_period=10.0, safety_margin=1.0, environ={})
    try:
        return app, coordinator, graceshut.starlette.install(app, coordinator, **arguments)
    except ConfigError:
        assert app.user_middleware == [], "a refused install adds nothing"
        assert not coordinator.shutting_down, "a refused install starts nothing"
        raise


@FUZZ
@given(
    paths=st.lists(good_path, min_size=3, max_size=3, unique=True),
    others=st.fixed_dictionaries(
        {
            "retry_after": good_retry_after,
            "token": st.one_of(st.none(), good_token),
            "admin_address": st.one_of(st.none(), good_admin),
            "signals": st.booleans(),
            "trust_loopback": st.one_of(st.none(), st.booleans()),
        }
    ),
)
def test_install_accepts_every_valid_combination(paths: list[str], others: dict[str, Any]) -> None:
    """Valid paths, Retry-After, token, admin address and flags always install."""
    _, coordinator, installed = install(
        shutdown_path=paths[0], readiness_path=paths[1], liveness_path=paths[2], **others
    )
    assert sorted(installed.routes) == sorted(paths)
    assert not coordinator.shutting_down


@FUZZ
@given(data=st.data(), argument=st.sampled_from(sorted(BAD)))
def test_install_refuses_each_invalid_argument_naming_it(
    data: st.DataObject, argument: str
) -> None:
    """One invalid argument among defaults: a ConfigError whose message names it."""
    value = data.draw(BAD[argument], label=argument)
    with pytest.raises(ConfigError) as refused:
        install(**{argument: value})
    assert argument in str(refused.value)


@FUZZ
@given(
    arguments=st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(BAD, anything),
    )
)
def test_install_with_any_values_installs_or_names_an_argument(arguments: dict[str, Any]) -> None:
    """Whatever is passed: installed, or a ConfigError naming one of the arguments."""
    error = None
    try:
        install(**arguments)
    except ConfigError as exc:
        error = str(exc)
    if error is not None:
        assert any(name in error for name in arguments), error


def parse(argv: list[str]) -> tuple[argparse.Namespace | None, str]:
    """Parse *argv* with graceshut's parser; (namespace or None on an error, stderr)."""
    errors = io.StringIO()
    code = None
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            return build_parser().parse_args(argv), errors.getvalue()
        except SystemExit as exc:
            code = exc.code
    assert code == 2, "argparse's usage error"
    return None, errors.getvalue()


good_url = st.builds(
    "{}://{}:{}{}".format,
    st.sampled_from(["http", "https", "HTTP"]),
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "app.default.svc", "10.0.0.7"]),
    st.integers(1, 65535),
    st.from_regex(r"(/[a-z0-9_.-]{0,8}){0,3}(\?wait=0)?", fullmatch=True),
)
any_url = st.one_of(good_url, st.text(max_size=40).filter(lambda t: "\x00" not in t))
good_seconds = st.floats(min_value=0.001, max_value=1e6).map(repr)
any_seconds = st.one_of(good_seconds, st.text(max_size=8), st.floats().map(str))


def url_ok(url: str) -> bool:
    try:
        check_url(url)
    except ValueError:
        return False
    return True


@FUZZ
@given(url=any_url, timeout=st.one_of(st.none(), any_seconds))
def test_prestop_parses_a_url_and_timeout_or_names_the_bad_one(
    url: str, timeout: str | None
) -> None:
    """prestop: a valid URL and timeout parse; anything else is an error naming it."""
    argv = ["prestop", *([f"--timeout={timeout}"] if timeout is not None else []), "--", url]
    args, errors = parse(argv)
    timeout_ok = timeout is None or _positive(timeout)
    if url_ok(url) and timeout_ok:
        assert args is not None, errors
        assert args.url == url
    else:
        assert args is None
        assert ("argument url:" in errors) or ("argument --timeout:" in errors), errors
        if not timeout_ok:
            assert "argument --timeout:" in errors or not url_ok(url)


@FUZZ
@given(url=any_url)
def test_run_parses_an_http_url_or_names_url(url: str) -> None:
    """run --url: an http(s) URL parses, anything else is refused before a command starts."""
    args, errors = parse(["run", f"--url={url}", "--", "true"])
    if url_ok(url):
        assert args is not None, errors
    else:
        assert args is None
        assert "argument --url:" in errors


def _positive(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


SIMULATE_OPTIONS = {
    "--port": st.one_of(st.integers(1, 65535).map(str), st.text(max_size=6)),
    "--rate": st.one_of(st.floats(0, 1e4).map(repr), st.text(max_size=6)),
    "--concurrency": st.one_of(st.integers(1, 1000).map(str), st.text(max_size=6)),
    "--timeout": any_seconds,
    "--warmup": any_seconds,
    "--endpoint-lag": any_seconds,
    "--ready-timeout": any_seconds,
    "--grace-period": st.one_of(st.integers(0, 3600).map(str), st.text(max_size=6)),
    "--pod-ip": st.one_of(st.just("127.0.0.1"), st.text(max_size=16)),
    "--path": st.one_of(good_path, st.text(max_size=8)),
    "--ready-path": st.one_of(good_path, st.text(max_size=8)),
    "--env": st.one_of(st.just("A=b"), st.text(max_size=8)),
    "--replicas": st.one_of(st.integers(1, 1000).map(str), st.text(max_size=6)),
    "--stop-signal": st.one_of(st.sampled_from(["SIGTERM", "QUIT", "3"]), st.text(max_size=6)),
}
# Paths that exist everywhere and are never written by the check: a writable device, a
# directory, a missing directory.
OUTPUT_PATHS = st.sampled_from(["/dev/null", "/", "/nonexistent-graceshut-dir/out"])
OUTPUTS = ("--app-log", "--junit-xml", "--svg", "--html")


@FUZZ
@given(
    options=st.fixed_dictionaries(
        {},
        optional={
            **{k: v.filter(lambda t: "\x00" not in t) for k, v in SIMULATE_OPTIONS.items()},
            **dict.fromkeys(OUTPUTS, OUTPUT_PATHS),
        },
    )
)
def test_simulate_options_plan_a_run_or_name_the_bad_option(options: dict[str, str]) -> None:
    """simulate: any option values plan a run, or are refused naming an option (no app)."""
    argv = ["simulate", "--no-progress", "--pid-namespace=off"]
    argv += [f"{name}={value}" for name, value in options.items()]
    args, errors = parse([*argv, "--", "app"])
    if args is None:
        assert any(f"argument {name}:" in errors for name in options), errors
        return
    error = _preflight.unwritable(
        (name, getattr(args, name[2:].replace("-", "_"))) for name in OUTPUTS
    )
    try:
        build_plan(args)
    except UsageError as exc:
        error = error or str(exc)
    if error is not None:
        assert any(name in error for name in options), error
    else:
        assert all(options.get(name, "/dev/null") == "/dev/null" for name in OUTPUTS)
