"""The shutdown route and the check that guards it.

Who may start a shutdown: whoever sends the configured token (``token=``, else
``GRACESHUT_TOKEN``) or, without one, the pod secret (see `graceshut._process._secret`) as
``Authorization: Bearer ...``. A loopback source address is trusted only when asked
for (``trust_loopback=True`` or ``GRACESHUT_TRUST_LOOPBACK=1``): sidecars relay outside
requests over loopback, often without any forwarding header.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from .._core._config import ENV_TOKEN, ConfigError, resolve_token
from .._process._secret import ENV_SECRET_DIR, ensure_pod_secret
from .._process._secret import secret_dir as default_secret_dir
from ._responses import Receive, Scope, Send, send_json

if TYPE_CHECKING:
    from .._core._coordinator import Coordinator

__all__ = ["ENV_TRUST_LOOPBACK", "Refusal", "ShutdownEndpoint"]

logger = logging.getLogger("graceshut")

ENV_TRUST_LOOPBACK = "GRACESHUT_TRUST_LOOPBACK"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

#: Any of these means a proxy relayed the request: it did not come from inside the pod.
#: Only consulted with loopback trust on; a proxy that adds none of them is not detected.
FORWARDING_HEADERS = frozenset(
    {
        b"forwarded",
        b"via",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-client-cert",
        b"x-real-ip",
        b"x-envoy-external-address",
        b"x-envoy-original-path",
        b"x-request-id",
    }
)

#: A refused call: status, JSON body, extra headers.
Refusal = tuple[int, dict[str, object], list[tuple[bytes, bytes]]]
_CHALLENGE = [(b"www-authenticate", b'Bearer realm="graceshut"')]


class ShutdownEndpoint:
    """``/shutdown``: starts the sequence (for a preStop hook) and reports.

    ``GET`` or ``POST``. It answers when the sequence is done, 200 with the report as
    JSON; ``?wait=0`` answers 202 at once. Calling it again, or concurrently, joins the
    run under way.

    It needs ``Authorization: Bearer <credential>``, compared in constant time: the
    *token* (or ``GRACESHUT_TOKEN``), else the pod secret that this process creates
    (or reads, when a sibling worker made it first) and that ``graceshut prestop``
    sends by itself. A refused call gets 401 or 403 with a JSON body that names where
    the credential comes from, and starts nothing.

    Args:
        coordinator: The coordinator to trigger.
        token: The bearer token; default ``GRACESHUT_TOKEN``, else the pod secret.
        trust_loopback: Also accept loopback clients that send no credential and no
            forwarding header; default ``GRACESHUT_TRUST_LOOPBACK``, else off. Unsafe
            behind a sidecar that relays over loopback (nginx's plain ``proxy_pass``).
        secret_dir: Where the pod secret lives; default ``GRACESHUT_SECRET_DIR``, else
            a per-user directory under the temp dir.
    """

    allowed = (b"GET", b"POST")

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        token: str | None = None,
        trust_loopback: bool | None = None,
        secret_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.trust_loopback = _resolve_trust_loopback(trust_loopback)
        resolved = resolve_token(token)
        self._digest: bytes | None = None
        self._unavailable: str | None = None
        if resolved is not None:
            self.source = "token=" if token is not None else ENV_TOKEN
            self._digest = _digest(resolved.encode())
        else:
            # Not the path: refusals go to whoever called, maybe from outside the pod.
            self.source = "the pod secret"
            try:
                # gettempdir() raises when no temp dir is writable (a read-only root).
                directory = Path(secret_dir) if secret_dir is not None else default_secret_dir()
                self._digest = _digest(ensure_pod_secret(directory).encode())
            except OSError as exc:
                # Fail closed: no credential is accepted, and the answer says how to fix it
                # (without the path: a refusal may go to a caller outside the pod).
                self._unavailable = (
                    "no token is configured and the pod secret could not be made (see the "
                    f"app's log): set {ENV_SECRET_DIR} to a writable directory of the app's "
                    f"user, or set {ENV_TOKEN}"
                )
                logger.warning(
                    "shutdown route: no token is configured and the pod secret is unusable "
                    "(%s): every call will be refused; set %s or %s",
                    exc,
                    ENV_SECRET_DIR,
                    ENV_TOKEN,
                )
        if self.trust_loopback:
            logger.warning(
                "shutdown route: trusting loopback clients without credentials; a proxy in "
                "the pod that relays over loopback lets its clients stop this pod"
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request to the route."""
        method = scope.get("method", "GET").encode()
        if method not in self.allowed:
            await send_json(send, *method_not_allowed(self.allowed))
            return
        refusal = self.refusal(scope.get("headers", ()), scope.get("client"))
        if refusal is not None:
            await send_json(send, *refusal)
            return
        wait = parse_wait(scope.get("query_string", b""))
        if wait is None:
            await send_json(send, *BAD_WAIT)
            return
        coordinator = self.coordinator
        if not wait:
            await send_json(send, 202, self.start())
            return
        await coordinator.shutdown("prestop", pod_wide=True)
        await send_json(send, 200, await coordinator.pod_report())

    def start(self) -> dict[str, object]:
        """Trigger the pod-wide sequence without waiting; the 202 body. Thread-safe."""
        coordinator = self.coordinator
        already = coordinator.shutting_down
        coordinator.trigger("prestop", pod_wide=True)
        return {"status": "already running" if already else "started", "reason": coordinator.reason}

    def refusal(self, headers: Iterable[tuple[bytes, bytes]], client: object) -> Refusal | None:
        """Why a request with these headers from *client* may not start a shutdown, or None.

        Never echoes what the client sent: a near-miss secret must not come back.
        """
        headers = list(headers)
        values = [v for k, v in headers if k.lower() == b"authorization"]
        if (
            not values
            and self.trust_loopback
            and _is_loopback(client)
            and not any(k.lower() in FORWARDING_HEADERS for k, _ in headers)
        ):
            return None
        if self._digest is None:
            return 403, {"error": "no credential configured", "detail": self._unavailable or ""}, []
        if len(values) != 1:
            return (
                401,
                {
                    "error": "missing credentials" if not values else "ambiguous credentials",
                    "detail": f"send exactly one 'Authorization: Bearer <credential>' header "
                    f"with {self._how_to()}",
                },
                _CHALLENGE,
            )
        scheme, _, credentials = values[0].strip().partition(b" ")
        credentials = credentials.strip()
        if scheme.lower() != b"bearer" or not credentials:
            return (
                401,
                {
                    "error": "malformed credentials",
                    "detail": "expected 'Authorization: Bearer <credential>' with "
                    + self._how_to(),
                },
                _CHALLENGE,
            )
        # Digests of equal length make the comparison constant-time whatever the input.
        if not hmac.compare_digest(_digest(credentials), self._digest):
            return 403, {"error": "invalid token", "detail": f"it does not match {self.source}"}, []
        return None

    def _how_to(self) -> str:
        if self.source == "token=":
            return "the token given to token= in the app's code"
        if self.source == ENV_TOKEN:
            return (
                f"the token in {ENV_TOKEN} (in a preStop httpGet hook: "
                "lifecycle.preStop.httpGet.httpHeaders)"
            )
        return (
            "the pod secret, readable only inside the container: call the route with "
            f"'graceshut prestop URL' (an exec preStop hook), which finds it, or set {ENV_TOKEN} "
            "for an httpGet hook"
        )


BAD_WAIT: Refusal = (
    400,
    {"error": "bad query", "detail": "wait must be 0 or 1 (or absent)"},
    [],
)


def method_not_allowed(allowed: tuple[bytes, ...]) -> Refusal:
    """The 405 answer: status, body, ``Allow`` header."""
    return (
        405,
        {"error": "method not allowed", "allowed": [m.decode() for m in allowed]},
        [(b"allow", b", ".join(allowed))],
    )


def parse_wait(query_string: bytes) -> bool | None:
    """``wait`` from the query: True (default), False, or None when malformed."""
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return None
    values = [v for k, v in pairs if k == "wait"]
    if not values:
        return True
    if len(values) > 1:
        return None
    return {"1": True, "true": True, "0": False, "false": False}.get(values[0].lower())


def _resolve_trust_loopback(given: bool | None, environ: Mapping[str, str] | None = None) -> bool:
    if given is not None:
        if not isinstance(given, bool):
            raise ConfigError(f"trust_loopback={given!r} must be True or False")
        return given
    env = os.environ if environ is None else environ
    raw = env.get(ENV_TRUST_LOOPBACK, "")
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ConfigError(f"{ENV_TRUST_LOOPBACK}={raw!r} must be 1 or 0 (true/false, yes/no, on/off)")


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _is_loopback(client: object) -> bool:
    if not isinstance(client, (tuple, list)) or not client:
        return False
    host = client[0]
    if not isinstance(host, str):
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
