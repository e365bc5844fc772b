"""The pod secret: private, shared by every process of the pod, renewed with the container."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager

import graceshut
from graceshut._process._secret import (
    SECRET_FILE,
    _container_identity,
    ensure_pod_secret,
    find_credential,
    read_pod_secret,
    secret_dir,
)

from .test_starlette import client_for, fast, make_app


def test_the_secret_is_a_private_file_in_a_private_directory(tmp_path: Path) -> None:
    """0700 directory, 0600 file, 43 URL-safe characters; asking again gives the same one."""
    directory = tmp_path / "secret"
    secret = ensure_pod_secret(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    path = directory / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) == 43
    assert path.read_text().strip() == secret
    assert ensure_pod_secret(directory) == secret
    assert read_pod_secret(directory) == secret
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_workers_starting_together_share_one_secret(tmp_path: Path) -> None:
    """Eight processes racing to create it all end up with the same secret."""
    directory = tmp_path / "secret"
    code = "import sys; from pathlib import Path; "
    code += "from graceshut._process._secret import ensure_pod_secret; "
    code += "print(ensure_pod_secret(Path(sys.argv[1])))"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    secrets = {p.communicate(timeout=60)[0].strip() for p in processes}
    assert len(secrets) == 1
    assert secrets == {read_pod_secret(directory)}


def test_a_secret_of_an_earlier_container_is_replaced(tmp_path: Path) -> None:
    """A secret left in a volume by an earlier run of the container is not trusted again."""
    directory = tmp_path / "secret"
    first = ensure_pod_secret(directory)
    container = directory / "shutdown-secret.container"
    assert container.read_text().strip() == _container_identity()
    container.write_text("another-boot:12345\n")  # as a restarted container finds it
    os.utime(directory / SECRET_FILE)  # a recent file: the age is not what counts
    second = ensure_pod_secret(directory)
    assert second != first
    assert ensure_pod_secret(directory) == second


def test_a_directory_others_can_read_is_refused(tmp_path: Path) -> None:
    """A group- or world-accessible directory is not private: refused, naming the variable."""
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    with pytest.raises(PermissionError, match="GRACESHUT_SECRET_DIR"):
        ensure_pod_secret(directory)
    with pytest.raises(PermissionError):
        read_pod_secret(directory)


def test_a_readable_file_or_a_symlink_is_refused(tmp_path: Path) -> None:
    """A secret file that others can read, or a symlink planted in its place, is refused."""
    directory = tmp_path / "secret"
    ensure_pod_secret(directory)
    path = directory / SECRET_FILE
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="not a private file"):
        ensure_pod_secret(directory)
    path.unlink()
    decoy = tmp_path / "decoy"
    decoy.write_text("planted\n")
    decoy.chmod(0o600)
    path.symlink_to(decoy)
    with pytest.raises(PermissionError, match="symlink"):
        read_pod_secret(directory)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    """A directory someone else made (and could read) is never used."""
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, 12345, 12345)
    with pytest.raises(PermissionError, match="owner uid 12345"):
        ensure_pod_secret(directory)


def test_the_location_comes_from_the_environment() -> None:
    """GRACESHUT_SECRET_DIR moves it; a relative path is an error naming the variable."""
    assert secret_dir({"GRACESHUT_SECRET_DIR": "/run/app"}) == Path("/run/app")
    assert secret_dir({}).name == f"graceshut.{os.geteuid()}"
    with pytest.raises(graceshut.ConfigError, match="GRACESHUT_SECRET_DIR"):
        secret_dir({"GRACESHUT_SECRET_DIR": "relative/dir"})


def test_clients_prefer_a_token_and_keep_the_secret_on_loopback(tmp_path: Path) -> None:
    """token, then GRACESHUT_TOKEN, then the pod secret; never the secret to another host."""
    directory = tmp_path / "secret"
    secret = ensure_pod_secret(directory)
    env = {"GRACESHUT_SECRET_DIR": str(directory)}
    assert find_credential("given", environ=env) == "given"
    assert find_credential(environ={**env, "GRACESHUT_TOKEN": "configured"}) == "configured"
    assert find_credential(environ=env) == secret
    assert find_credential(url="http://127.0.0.1:8000/shutdown", environ=env) == secret
    assert find_credential(url="http://localhost:8000/shutdown", environ=env) == secret
    assert find_credential(url="http://10.0.0.7:8000/shutdown", environ=env) is None
    assert find_credential(environ={"GRACESHUT_SECRET_DIR": str(tmp_path / "none")}) is None


@pytest.mark.anyio
async def test_a_route_without_any_usable_credential_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No token and no pod secret possible: every call is refused and the body says why."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("GRACESHUT_SECRET_DIR", str(shared))
    coordinator = fast()
    app = make_app(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        for headers in ({}, {"Authorization": "Bearer anything"}):
            response = await client.get("/shutdown?wait=0", headers=headers)
            assert response.status_code == 403
            assert response.json()["error"] == "no credential configured"
            assert "GRACESHUT_SECRET_DIR" in response.json()["detail"]
            assert str(shared) not in response.text
        assert not coordinator.shutting_down


@pytest.mark.anyio
async def test_a_read_only_location_fails_closed_without_stopping_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nowhere to write the secret (a read-only root): the app serves, the route refuses."""
    monkeypatch.setenv("GRACESHUT_SECRET_DIR", "/proc/graceshut-secret")  # mkdir fails here
    coordinator = fast()
    app = make_app(coordinator)
    async with LifespanManager(app), client_for(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        refused = await client.get("/shutdown?wait=0", headers={"Authorization": "Bearer x"})
        assert refused.status_code == 403
        assert refused.json()["error"] == "no credential configured"
        assert not coordinator.shutting_down
