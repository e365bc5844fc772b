"""The pod secret: the shutdown route's credential when no token is configured.

A loopback source address proves nothing (an nginx sidecar with a plain ``proxy_pass``
relays outside requests from 127.0.0.1 with no forwarding header), so without a token
the route asks for a random secret that only the container's own processes can read:
a 0600 file in a 0700 directory of the app's user, under the temp dir by default
(``GRACESHUT_SECRET_DIR`` moves it). ``graceshut prestop`` reads it and sends it, so
the exec hook needs no configuration.

Several worker processes of one pod share one secret: they take an ``flock`` on the
directory's lock file, the first creates the secret (a private temporary file renamed
into place, so nobody reads it half-written), the others read it. Next to it,
``shutdown-secret.container`` names the container that made it (the boot id and its
PID 1's start, both immune to clock steps): a secret left in a volume by an earlier
run of a restarted container is replaced rather than trusted forever, and one made by
this container is never replaced under the processes that hold it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import secrets
import stat
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path

from .._core._config import ENV_TOKEN, ConfigError
from . import _proc as proc

# Names, not secrets:
ENV_SECRET_DIR = "GRACESHUT_SECRET_DIR"  # noqa: S105
SECRET_FILE = "shutdown-secret"  # noqa: S105
CONTAINER_FILE = "shutdown-secret.container"
_LOCK_FILE = ".lock"
_PRIVATE = 0o077  # mode bits that must be clear: no access for group or others
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


def secret_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the pod secret lives: ``GRACESHUT_SECRET_DIR``, else a per-user temp dir.

    Raises:
        ConfigError: ``GRACESHUT_SECRET_DIR`` is set but empty or relative.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_SECRET_DIR)
    if raw is not None:
        if not raw.strip() or not Path(raw).is_absolute():
            raise ConfigError(f"{ENV_SECRET_DIR}={raw!r} must be an absolute directory path")
        return Path(raw)
    # Per user: a root sidecar and a non-root app never fight over one directory.
    return Path(tempfile.gettempdir()) / f"graceshut.{os.geteuid()}"


def ensure_pod_secret(directory: Path | None = None) -> str:
    """The pod's secret: created by the first process that asks, read by the others.

    Raises:
        OSError: The directory cannot be made or locked (a read-only file system), or
            it or the file is not private to this user (``PermissionError``).
    """
    directory = secret_dir() if directory is None else directory
    _private_directory(directory)
    path = directory / SECRET_FILE
    container = directory / CONTAINER_FILE
    this_container = _container_identity()
    with _locked(directory):
        existing = _read_private(path)
        if existing is not None and _read_private(container) == this_container:
            return existing
        secret = secrets.token_urlsafe(32)
        _write_private(container, this_container)
        _write_private(path, secret)
        return secret


def read_pod_secret(directory: Path | None = None) -> str | None:
    """The pod secret for a client in the container, or None when there is none.

    Raises:
        PermissionError: The directory or file exists but is not private to this user.
    """
    directory = secret_dir() if directory is None else directory
    try:
        _check_private(directory, directory.lstat(), kind="directory")
    except FileNotFoundError:
        return None
    return _read_private(directory / SECRET_FILE)


def find_credential(
    token: str | None = None,
    *,
    url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """What a client in the container sends as bearer token to the shutdown route.

    *token* if given, else ``GRACESHUT_TOKEN``, else the pod secret, else None.
    ``graceshut prestop`` and ``graceshut run`` use it, so both authenticate the same way.
    The pod secret goes only to a loopback *url*: it is this container's, and must not
    travel to whatever other host a hook was pointed at.

    Raises:
        ValueError: The pod secret exists but is not private to this user, or
            ``GRACESHUT_SECRET_DIR`` is invalid.
    """
    if token is not None:
        return token
    env = os.environ if environ is None else environ
    configured = env.get(ENV_TOKEN)
    if configured is not None:
        return configured
    if url is not None and not _is_loopback_url(url):
        return None
    try:
        return read_pod_secret(secret_dir(env))
    except OSError as exc:
        raise ValueError(f"cannot use the pod secret: {exc}") from None


def _is_loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _private_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(directory, directory.lstat(), kind="directory")


def _check_private(path: Path, info: os.stat_result, *, kind: str) -> None:
    """Refuse what another user could have made or can read: it would not be secret."""
    expected = stat.S_ISDIR if kind == "directory" else stat.S_ISREG
    if not expected(info.st_mode):
        raise PermissionError(f"{path} is not a {kind} (a symlink?): set {ENV_SECRET_DIR}")
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & _PRIVATE:
        raise PermissionError(
            f"{path} is not a private {kind} of this user (owner uid {info.st_uid}, mode "
            f"{stat.S_IMODE(info.st_mode):o}): set {ENV_SECRET_DIR} to a directory of your own"
        )


def _write_private(path: Path, value: str) -> None:
    """Write *value* to a new private file and rename it to *path*: never seen half-written."""
    temporary = path.with_name(f".{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL + O_NOFOLLOW: a fresh file of ours, never one planted under that name.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(value + "\n")
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _read_private(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | _FILE_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermissionError(f"{path} is a symlink: refusing it as the pod secret") from None
        raise
    with os.fdopen(fd, encoding="ascii", errors="replace") as file:
        info = os.fstat(file.fileno())
        _check_private(path, info, kind="file")
        value = file.read(4096).strip()
    return value if value.isascii() and value.isprintable() and " " not in value else None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    import fcntl  # noqa: PLC0415 - POSIX only, like the rest of the pod machinery

    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT | _FILE_FLAGS, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _container_identity() -> str:
    """This boot and this container's PID 1 start (clock ticks since boot), on Linux.

    A restarted container has a new PID 1; a rebooted node a new boot id. Off Linux it
    is constant, and a secret lasts as long as its directory.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"
    init = proc.stat(1)
    return "unknown" if init is None else f"{boot}:{init.start_time}"
