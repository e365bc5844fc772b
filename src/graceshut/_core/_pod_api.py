"""This pod's own object from the API server: the true end of a deletion, and the grace period.

The kubelet often gives less than the manifest's ``terminationGracePeriodSeconds``
(``kubectl delete --grace-period``, the Eviction API of drains and spot-interruption
handlers), and nothing in the container says so: the downward API cannot expose
``metadata.deletionTimestamp``. The pod object can, to an app whose service account may
``get`` its own pod. One GET with the in-cluster credentials, standard library only
(``http.client`` over ``ssl``, in a worker thread), bounded by a timeout: a failure is a
one-line reason, never an exception into the shutdown.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.client
import json
import math
import os
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.to_thread

from ._pod import pod_name

DEFAULT_SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
ENV_SERVICE_ACCOUNT_DIR = "GRACESHUT_SERVICE_ACCOUNT_DIR"
"""Where the token, ``ca.crt`` and ``namespace`` files are (a pod mounts them there)."""
ENV_POD_NAMESPACE = "POD_NAMESPACE"
"""The namespace, from the downward API; else the service account's ``namespace`` file."""


class ApiUnavailable(Exception):  # noqa: N818 - a reason to fall back, not an error
    """Why the pod could not be read: one line, for the log."""


@dataclasses.dataclass(frozen=True)
class PodTiming:
    """What the pod object says about this pod's time.

    Attributes:
        deletion_timestamp: ``metadata.deletionTimestamp`` (seconds since the epoch):
            when the pod is to be gone; None before any deletion.
        deletion_grace_period: ``metadata.deletionGracePeriodSeconds``, or None.
        grace_period: ``spec.terminationGracePeriodSeconds``, or None.
    """

    deletion_timestamp: float | None
    deletion_grace_period: float | None
    grace_period: float | None


@dataclasses.dataclass(frozen=True)
class ApiAccess:
    """Where the API server is and how to prove who we are, as a pod has them."""

    host: str
    port: int
    token: str
    ca_file: Path
    namespace: str
    name: str

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ApiAccess:
        """The in-cluster credentials of this pod.

        Raises:
            ApiUnavailable: Not in a pod, or its service account token is not mounted.
        """
        env = os.environ if environ is None else environ
        host = env.get("KUBERNETES_SERVICE_HOST")
        if not host:
            raise ApiUnavailable("KUBERNETES_SERVICE_HOST is not set: not running in a pod")
        raw_port = env.get("KUBERNETES_SERVICE_PORT") or "443"
        if not raw_port.isdigit():
            raise ApiUnavailable(f"KUBERNETES_SERVICE_PORT={raw_port!r} is not a port")
        folder = Path(env.get(ENV_SERVICE_ACCOUNT_DIR) or DEFAULT_SERVICE_ACCOUNT_DIR)
        try:
            token = (folder / "token").read_text().strip()
            namespace = env.get(ENV_POD_NAMESPACE) or (folder / "namespace").read_text().strip()
        except OSError as exc:
            raise ApiUnavailable(
                f"no service account credentials in {folder} ({exc.strerror or exc}): "
                "is automountServiceAccountToken false?"
            ) from None
        name = env.get("POD_NAME") or env.get("HOSTNAME") or pod_name()
        return cls(host, int(raw_port), token, folder / "ca.crt", namespace, name)

    @property
    def path(self) -> str:
        """The pod's path on the API server."""
        quote = urllib.parse.quote
        return f"/api/v1/namespaces/{quote(self.namespace)}/pods/{quote(self.name)}"


def read_pod(access: ApiAccess, timeout: float) -> PodTiming:
    """GET this pod from the API server; blocking, each socket step within *timeout*.

    Raises:
        ApiUnavailable: With one line saying why (TLS, refused, status, malformed body).
    """
    try:
        context = ssl.create_default_context(cafile=str(access.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ApiUnavailable(f"cannot load the CA {access.ca_file}: {exc}") from None
    connection = http.client.HTTPSConnection(
        access.host, access.port, timeout=timeout, context=context
    )
    try:
        connection.request(
            "GET",
            access.path,
            headers={"Authorization": f"Bearer {access.token}", "Accept": "application/json"},
        )
        response = connection.getresponse()
        body = response.read(1 << 20)
    except TimeoutError:
        raise ApiUnavailable(f"no answer from the API server within {timeout:g}s") from None
    except ssl.SSLError as exc:
        raise ApiUnavailable(f"TLS with the API server failed: {exc.reason or exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ApiUnavailable(f"cannot reach the API server: {exc}") from None
    finally:
        connection.close()
    where = f"{access.namespace}/{access.name}"
    if response.status != 200:  # noqa: PLR2004
        detail = _status_message(body)
        hint = " (the service account needs get on pods: see the Role in docs/budget.md)"
        raise ApiUnavailable(
            f"the API server answered {response.status} for pod {where}"
            + (f": {detail}" if detail else "")
            + (hint if response.status in (401, 403) else "")
        )
    return parse_pod(body, where)


def parse_pod(body: bytes, where: str = "the pod") -> PodTiming:
    """The timing fields of a pod object (JSON).

    Raises:
        ApiUnavailable: The body is not a pod object, or a field has the wrong type.
    """
    try:
        pod = json.loads(body)
    except ValueError:
        raise ApiUnavailable(f"the API server's answer for {where} is not JSON") from None
    if not isinstance(pod, dict) or not isinstance(pod.get("metadata"), dict):
        raise ApiUnavailable(f"the API server's answer for {where} is not a pod object")
    metadata = pod["metadata"]
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    stamp = metadata.get("deletionTimestamp")
    deleted_at: float | None = None
    if stamp is not None:
        deleted_at = _timestamp(stamp, where)
    return PodTiming(
        deleted_at,
        _seconds(metadata.get("deletionGracePeriodSeconds"), "deletionGracePeriodSeconds", where),
        _seconds(spec.get("terminationGracePeriodSeconds"), "terminationGracePeriodSeconds", where),
    )


def deadline_from(timing: PodTiming, started: float, safety_margin: float) -> float:
    """The run's deadline (monotonic) that the pod's deletion sets, the safety margin off.

    ``deletionTimestamp`` is the deletion's moment plus its grace period, in whole
    seconds rounded down: the kubelet starts counting when it sees the deletion, a
    little later, so it is on the safe side. A node clock behind the API server's
    would push it late: it never counts for more than ``deletionGracePeriodSeconds``
    from the trigger (*started*).

    Raises:
        ApiUnavailable: No deletion under way.
    """
    if timing.deletion_timestamp is None:
        raise ApiUnavailable("the pod has no deletionTimestamp: no deletion through the API")
    end = time.monotonic() + (timing.deletion_timestamp - time.time())
    grace = timing.deletion_grace_period
    if grace is not None:
        # Before the trigger cannot be (the trigger follows the deletion): a node clock
        # ahead of the API server's; the grace period from the trigger is all we have.
        end = started + grace if end < started else min(end, started + grace)
    return end - safety_margin


def _timestamp(value: object, where: str) -> float:
    if not isinstance(value, str):
        raise ApiUnavailable(f"deletionTimestamp of {where} is not a string: {value!r}")
    text = value[:-1] + "+00:00" if value.endswith("Z") else value  # fromisoformat in 3.10
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ApiUnavailable(f"deletionTimestamp of {where} is not RFC 3339: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def _seconds(value: object, field: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiUnavailable(f"{field} of {where} is not a number: {value!r}")
    return float(value)


def _status_message(body: bytes) -> str:
    try:
        status = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace").strip()
    message = status.get("message") if isinstance(status, dict) else None
    return str(message)[:200] if message else ""


async def fetch_pod(within: float, environ: Mapping[str, str] | None = None) -> PodTiming:
    """Read this pod in a worker thread, giving up after *within* seconds.

    A read that outlives the timeout is abandoned (its socket times out on its own);
    the event loop never waits on it.

    Raises:
        ApiUnavailable: With one line saying why.
    """

    def read() -> PodTiming:
        return read_pod(ApiAccess.from_environment(environ), within)

    with anyio.move_on_after(within):
        return await anyio.to_thread.run_sync(read, abandon_on_cancel=True)
    raise ApiUnavailable(f"no answer from the API server within {within:g}s")
