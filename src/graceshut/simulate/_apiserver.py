"""The API server's part: this pod's object over HTTPS, as an app in a pod reads it.

So that an app with ``deadline_source="api"`` can be played locally: a CA made at run
time (with the ``openssl`` command), a server certificate for 127.0.0.1 signed by it,
and the service account's files (``token``, ``ca.crt``, ``namespace``) laid out in a
temporary directory that the app is pointed at through its environment
(`ApiServer.environment`). ``GET /api/v1/namespaces/{ns}/pods/{name}`` with the token
answers the pod object; anything else is 404, a wrong token 401, as the API server does.

The deletion sets ``metadata.deletionTimestamp`` to the moment of the deletion plus its
grace period, in whole seconds rounded down (RFC 3339 has no fraction there), and
``metadata.deletionGracePeriodSeconds``; the kubelet's own kills (node shutdown,
node-pressure eviction) set neither: `ApiServer.delete` is only for API deletions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import math
import secrets
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: A handler's answer: HTTP status, body, and seconds to wait before sending it.
Answer = tuple[int, bytes, float]


class TlsError(RuntimeError):
    """No certificate could be made (the ``openssl`` command is missing or failed)."""


def make_certificates(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A fresh CA, and a server certificate for *host* signed by it, in *folder*.

    Returns:
        The CA certificate, the server certificate and the server's key.

    Raises:
        TlsError: ``openssl`` is not installed, or refused.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsError("the openssl command is not installed")
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt = folder / "server.key", folder / "server.csr", folder / "server.crt"
    ext = folder / "server.ext"
    ext.write_text(
        f"subjectAltName=IP:{host},DNS:localhost,DNS:kubernetes.default.svc\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps: list[list[str | Path]] = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
         "-subj", "/CN=graceshut simulate CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=kube-apiserver"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
         "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(step, capture_output=True, check=False, timeout=30)  # noqa: S603
        if done.returncode != 0:
            raise TlsError(f"openssl failed: {done.stderr.decode(errors='replace')[-300:]}")
    return ca_crt, crt, key


class ApiServer:
    """One pod object served over HTTPS on 127.0.0.1, and the files a pod reads it with.

    *answer*, when given, replaces the pod object for every request: the status, the
    body and a delay (tests play a 403, a slow or a malformed answer with it).
    """

    def __init__(
        self,
        *,
        name: str = "app-7d9f8b6c4-x2x9q",
        namespace: str = "default",
        grace_period: float | None = 30,
        answer: Callable[[], Answer] | None = None,
    ) -> None:
        self.name, self.namespace = name, namespace
        self.grace_period = grace_period
        self.requests = 0
        """How many reads of the pod were answered."""
        self._answer = answer
        self._deletion: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self.folder = Path(tempfile.mkdtemp(prefix="graceshut-apiserver-"))
        self.token = secrets.token_urlsafe(24)
        try:
            ca, crt, key = make_certificates(self.folder)
            accounts = self.folder / "serviceaccount"
            accounts.mkdir()
            shutil.copy(ca, accounts / "ca.crt")
            (accounts / "token").write_text(self.token)
            (accounts / "namespace").write_text(namespace)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(crt, key)
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
            self._server.daemon_threads = True
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.port = int(self._server.server_address[1])
        self.service_account = accounts
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="apiserver", daemon=True
        )
        self._thread.start()

    def environment(self) -> dict[str, str]:
        """The variables that point an app at this server, as a pod has them."""
        return {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.port),
            "GRACESHUT_SERVICE_ACCOUNT_DIR": str(self.service_account),
            "POD_NAME": self.name,
            "POD_NAMESPACE": self.namespace,
        }

    def delete(self, grace_period: float, at: float | None = None) -> str:
        """Mark the pod deleted at *at* (``time.time``, default now) with *grace_period*.

        Returns:
            The ``deletionTimestamp`` as the API server writes it.
        """
        moment = time.time() if at is None else at
        end = dt.datetime.fromtimestamp(math.floor(moment + grace_period), tz=dt.timezone.utc)
        stamp = end.strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            self._deletion = (stamp, math.floor(grace_period))
        return stamp

    def pod(self) -> dict[str, Any]:
        """The pod object as the API server would answer it now."""
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "uid": "00000000-0000-4000-8000-000000000000",
        }
        with self._lock:
            deletion = self._deletion
        if deletion is not None:
            metadata["deletionTimestamp"], metadata["deletionGracePeriodSeconds"] = deletion
        spec: dict[str, Any] = {"containers": [{"name": "app"}]}
        if self.grace_period is not None:
            spec["terminationGracePeriodSeconds"] = self.grace_period
        return {"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec}

    def close(self) -> None:
        """Stop serving and remove the files."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> ApiServer:  # noqa: PYI034 - not meant to be subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def respond(self, path: str, authorization: str | None) -> Answer:
        """The answer to ``GET path``: the pod, or the error the API server would give."""
        if authorization != f"Bearer {self.token}":
            return 401, _status(401, "Unauthorized"), 0.0
        if path != f"/api/v1/namespaces/{self.namespace}/pods/{self.name}":
            return 404, _status(404, f"the server could not find {path}"), 0.0
        self.requests += 1
        if self._answer is not None:
            return self._answer()
        return 200, json.dumps(self.pod()).encode(), 0.0


def _status(code: int, message: str) -> bytes:
    return json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
         "code": code}
    ).encode()  # fmt: skip


def _handler(server: ApiServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, delay = server.respond(self.path, self.headers.get("Authorization"))
            if delay > 0:
                time.sleep(delay)
            with contextlib.suppress(OSError):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # the run's own timeline says what matters

    return Handler
