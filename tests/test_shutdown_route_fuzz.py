"""Property: no request without the credential starts a shutdown or gets a secret back."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

import graceshut.starlette
from graceshut._process._secret import read_pod_secret

from .test_starlette import fast

TOKEN = "s3cr3t-token-0123456789abcdefghij"
CANARY = b"c4n4ry-7f3e9b2a41d86c05"

methods = st.one_of(
    st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "TRACE"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8),
)
paths = st.one_of(
    st.sampled_from(
        ["/shutdown", "/shutdown/", "//shutdown", "/SHUTDOWN", "/shutdown\x00", "/readyz", "/"]
    ),
    st.text(max_size=20).map(lambda s: "/" + s),
)
queries = st.one_of(
    st.sampled_from([b"", b"wait=0", b"wait=1", b"wait=0&wait=0", b"wait=false", b"token=x"]),
    st.binary(max_size=30),
)
clients = st.sampled_from(
    [("127.0.0.1", 40000), ("::1", 40000), ("::ffff:127.0.0.1", 1), ("10.0.0.9", 2), None]
)
FORWARDING = [b"forwarded", b"via", b"x-forwarded-for", b"x-real-ip", b"x-request-id"]
other_headers = st.lists(
    st.tuples(
        st.one_of(st.sampled_from([*FORWARDING, b"host", b"cookie"]), st.binary(max_size=12)),
        st.binary(max_size=40),
    ),
    max_size=6,
)


def wrong_credentials(secret: str) -> st.SearchStrategy[list[bytes]]:
    """Authorization values that must never pass: none, several, or any single wrong one."""
    raw = secret.encode()
    single_wrong = st.one_of(
        st.sampled_from(
            [
                b"",
                b"Bearer",
                b"Bearer ",
                b"Basic " + raw,
                b"Token " + raw,
                raw,
                b"Bearer " + raw[:-1],
                b"Bearer " + raw + b"x",
                b"Bearer " + raw.swapcase(),
                b"Bearer \x00" + raw,
                b"Bearer " + raw + b"\x00",
                b"Bearer " + raw * 2,
                b"Bearer " + b"A" * 60000,
            ]
        ),
        st.binary(max_size=80).map(lambda b: b"Bearer " + b),
        st.binary(max_size=80),
        # A canary: if an answer ever echoed a credential, this would show up in it.
        st.sampled_from([b"Bearer ", b"Basic ", b"", b"Bearer " + raw[:10]]).map(
            lambda prefix: prefix + CANARY
        ),
    )
    several = st.lists(st.one_of(single_wrong, st.just(b"Bearer " + raw)), min_size=2, max_size=4)
    return st.one_of(st.just([]), single_wrong.map(lambda v: [v]), several)


async def call(app: Any, scope: dict[str, Any]) -> tuple[int, bytes]:
    """One request straight through the ASGI app; the status and everything sent back."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    echoed = b"".join(k + b":" + v for k, v in start.get("headers", []))
    echoed += b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], echoed


@pytest.mark.parametrize("setup", ["pod secret", "token", "loopback opt-in"])
def test_no_unauthorised_request_starts_anything_or_echoes_a_secret(setup: str) -> None:
    """Random methods, paths, queries, clients, headers and credentials: all refused, no echo."""
    coordinator = fast()
    app = Starlette()
    graceshut.starlette.install(
        app,
        coordinator,
        signals=False,
        token=TOKEN if setup == "token" else None,
        trust_loopback=setup == "loopback opt-in",
    )
    secret = TOKEN if setup == "token" else read_pod_secret()
    assert secret
    started: list[str] = []

    def record(*_: object, **__: object) -> None:
        started.append("started")

    coordinator.trigger = record  # type: ignore[method-assign]
    coordinator.shutdown = record  # type: ignore[method-assign,assignment]

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        method=methods,
        path=paths,
        query=queries,
        client=clients,
        headers=other_headers,
        authorization=wrong_credentials(secret),
    )
    def check(
        *,
        method: str,
        path: str,
        query: bytes,
        client: tuple[str, int] | None,
        headers: list[tuple[bytes, bytes]],
        authorization: list[bytes],
    ) -> None:
        if setup == "loopback opt-in":
            # The opt-in trusts unproxied loopback callers: only relayed or remote ones here.
            headers = [*headers, (b"x-forwarded-for", b"203.0.113.9")]
        all_headers = headers + [(b"authorization", v) for v in authorization]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode("utf-8", "surrogateescape"),
            "query_string": query,
            "root_path": "",
            "headers": all_headers,
            "client": client,
            "server": ("127.0.0.1", 8000),
        }
        status, echoed = anyio.run(call, app, scope)
        assert not started, f"{method} {path} started a shutdown"
        assert status not in (200, 202) or path != "/shutdown"
        assert secret.encode() not in echoed
        assert CANARY not in echoed

    check()
    assert not coordinator.shutting_down
