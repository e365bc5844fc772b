"""The deadline from the API server: an HTTPS server with its own CA, files laid out as in a pod."""

from __future__ import annotations

import calendar
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from graceshut import ConfigError, Coordinator, Outcome, ShutdownContext
from graceshut._core._pod_api import ApiUnavailable, PodTiming, deadline_from, parse_pod
from graceshut.contrib.termination import write_termination_message
from graceshut.simulate._apiserver import Answer, ApiServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def api() -> Iterator[ApiServer]:
    """The pod's API server: one pod object, a 60 s terminationGracePeriodSeconds."""
    with ApiServer(grace_period=60) as server:
        yield server


def coordinator_for(
    server: ApiServer | None, *, propagation_delay: float = 0.0, **env: str
) -> Coordinator:
    environ = {**(server.environment() if server is not None else {}), **env}
    return Coordinator(
        grace_period=60,
        safety_margin=1,
        propagation_delay=propagation_delay,
        deadline_source="api",
        api_timeout=1.0,
        environ=environ,
    )


async def test_a_deletion_in_progress_shrinks_the_deadline_and_the_flush_still_runs(
    api: ApiServer, tmp_path: Path
) -> None:
    """Given 5 s by the deletion, not 60: the delay and drain give way, the flush runs in time."""
    coordinator = coordinator_for(api, propagation_delay=30)
    target = write_termination_message(coordinator, tmp_path / "termination-log")
    flushed: list[float] = []

    @coordinator.on_shutdown("flush", timeout=2.0, name="save")
    async def save(ctx: ShutdownContext) -> None:
        await anyio.sleep(0.5)
        flushed.append(time.time())

    async def stuck() -> None:
        async with coordinator.track("export"):
            await anyio.sleep(60)

    stamp = api.delete(5)
    end = api.pod()["metadata"]["deletionTimestamp"]
    assert stamp == end
    async with anyio.create_task_group() as tg:
        tg.start_soon(stuck)
        await anyio.sleep(0.05)
        report = await coordinator.shutdown("SIGTERM")
        tg.cancel_scope.cancel()

    assert report.deadline_source == "api"
    assert report.budget is not None
    assert report.budget <= 5 - 1 + 0.1
    assert "deletionTimestamp" in report.deadline_detail
    assert "deletionGracePeriodSeconds 5" in report.deadline_detail
    assert [h.outcome for h in report.handlers] == [Outcome.OK]
    assert report.abandoned == ("export",)
    deleted_end = calendar.timegm(time.strptime(end, "%Y-%m-%dT%H:%M:%SZ"))
    assert flushed
    assert flushed[0] < deleted_end
    assert time.time() < deleted_end, "the whole run ended before the pod's end"
    assert api.requests == 1
    data = report.to_dict()
    assert data["deadline_source"] == "api"
    message = target.read_text().splitlines()
    assert message[1].startswith("deadline: ")
    assert "(api): from the API server: deletionTimestamp" in message[1]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ((403, json.dumps({"kind": "Status", "message": "pods is forbidden"}).encode(), 0.0),
         "answered 403 for pod default/"),
        ((200, b"<html>not a pod</html>", 0.0), "is not JSON"),
        ((200, b'{"metadata": {"deletionTimestamp": "soon"}}', 0.0), "is not RFC 3339"),
        ((200, b"[1, 2]", 0.0), "is not a pod object"),
        ((200, b"{}", 3.0), "no answer from the API server within 0.3s"),
    ],
    ids=["forbidden", "not-json", "bad-timestamp", "not-a-pod", "slow"],
)  # fmt: skip
async def test_every_failure_keeps_the_configured_deadline_and_says_why(
    answer: Answer, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 403, a slow or a malformed answer: the configured deadline stands, one line says why."""
    with ApiServer(grace_period=60, answer=lambda: answer) as server:
        coordinator = Coordinator(
            grace_period=60, safety_margin=1, propagation_delay=0, deadline_source="api",
            api_timeout=0.3, environ=server.environment(),
        )  # fmt: skip
        ran: list[str] = []
        coordinator.add_handler(
            lambda: ran.append("announce"), phase="announce", timeout=1, name="tell"
        )
        coordinator.add_handler(lambda: ran.append("flush"), phase="flush", timeout=1, name="save")
        with caplog.at_level(logging.WARNING, logger="graceshut"):
            report = await coordinator.shutdown("SIGTERM")
    assert ran == ["announce", "flush"]
    assert report.ok
    assert report.deadline_source == "config"
    assert report.budget == pytest.approx(59)
    assert why in report.deadline_detail
    lines = [r.getMessage() for r in caplog.records if "API server not used" in r.getMessage()]
    assert len(lines) == 1
    assert why in lines[0]
    assert "\n" not in lines[0]


async def test_no_deletion_yet_keeps_the_configured_deadline(api: ApiServer) -> None:
    """A pod with no deletionTimestamp (the kubelet's own kill, a local run): the config stands."""
    report = await coordinator_for(api).shutdown("SIGTERM")
    assert report.deadline_source == "config"
    assert "no deletionTimestamp" in report.deadline_detail
    assert report.budget == pytest.approx(59)


async def test_a_longer_deletion_than_configured_changes_nothing(api: ApiServer) -> None:
    """The configured grace period is the upper bound: a later deletionTimestamp is not used."""
    api.delete(120)
    report = await coordinator_for(api).shutdown("SIGTERM")
    assert report.deadline_source == "config"
    assert "is no sooner" in report.deadline_detail
    assert report.budget == pytest.approx(59)


async def test_outside_a_pod_the_configured_deadline_stands() -> None:
    """No KUBERNETES_SERVICE_HOST: not in a pod, said in the report."""
    report = await coordinator_for(None).shutdown()
    assert report.deadline_source == "config"
    assert "not running in a pod" in report.deadline_detail


async def test_missing_credentials_are_named(api: ApiServer, tmp_path: Path) -> None:
    """A service account directory without a token: the report names the directory."""
    coordinator = coordinator_for(api, GRACESHUT_SERVICE_ACCOUNT_DIR=str(tmp_path))
    report = await coordinator.shutdown()
    assert report.deadline_source == "config"
    assert str(tmp_path) in report.deadline_detail


async def test_a_ca_that_did_not_sign_the_server_is_refused(api: ApiServer, tmp_path: Path) -> None:
    """TLS is verified against the pod's ca.crt: another CA's server is not believed."""
    with ApiServer() as other:
        folder = tmp_path / "sa"
        folder.mkdir()
        for name in ("token", "namespace"):
            (folder / name).write_bytes((api.service_account / name).read_bytes())
        (folder / "ca.crt").write_bytes((other.service_account / "ca.crt").read_bytes())
        api.delete(5)
        report = await coordinator_for(api, GRACESHUT_SERVICE_ACCOUNT_DIR=str(folder)).shutdown()
    assert report.deadline_source == "config"
    assert "TLS" in report.deadline_detail
    assert api.requests == 0


async def test_the_read_never_holds_the_announce() -> None:
    """Readiness fails and announce handlers run while the API server is still answering."""
    with ApiServer(answer=lambda: (200, b"{}", 1.0)) as server:
        coordinator = Coordinator(
            grace_period=60, safety_margin=1, propagation_delay=0, deadline_source="api",
            api_timeout=2.0, environ=server.environment(),
        )  # fmt: skip
        seen: list[tuple[str, int]] = []

        @coordinator.on_shutdown("announce", timeout=1)
        def announce() -> None:
            seen.append(("announce", server.requests))

        @coordinator.on_shutdown("drain", timeout=1)
        def drain() -> None:
            seen.append(("drain", server.requests))

        async with anyio.create_task_group() as tg:
            tg.start_soon(coordinator.shutdown)
            await anyio.sleep(0.2)
            # The answer takes 1 s: the announce ran, the drain waits for the deadline.
            assert coordinator.shutting_down
            assert [name for name, _ in seen] == ["announce"]
        report = await coordinator.wait()
    assert [name for name, _ in seen] == ["announce", "drain"]
    assert report.deadline_source == "config"


def test_a_bad_deadline_source_names_the_argument_or_the_variable() -> None:
    """deadline_source='apiserver' and GRACESHUT_DEADLINE_SOURCE=yes are clear errors."""
    with pytest.raises(ConfigError, match="deadline_source='apiserver'"):
        Coordinator(deadline_source="apiserver", environ={})
    with pytest.raises(ConfigError, match="GRACESHUT_DEADLINE_SOURCE='yes'"):
        Coordinator(environ={"GRACESHUT_DEADLINE_SOURCE": "yes"})
    with pytest.raises(ConfigError, match="GRACESHUT_API_TIMEOUT='0'"):
        Coordinator(environ={"GRACESHUT_API_TIMEOUT": "0"})
    assert Coordinator(environ={"GRACESHUT_DEADLINE_SOURCE": "API"}).settings.deadline_source == (
        "api"
    )
    assert Coordinator(environ={}).settings.deadline_source == "config"


@pytest.mark.parametrize(
    ("configured", "used", "warned"),
    [(None, 20.0, False), ("60", 20.0, True), ("10", 10.0, True), ("20", 20.0, False)],
    ids=["none-configured", "configured-longer", "configured-shorter", "same"],
)
async def test_startup_reads_the_grace_period_from_the_spec(
    configured: str | None, used: float, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """spec.terminationGracePeriodSeconds fills in a missing grace period; drift is a warning."""
    with ApiServer(grace_period=20) as server:
        environ = {**server.environment(), "GRACESHUT_DEADLINE_SOURCE": "api"}
        if configured is not None:
            environ["GRACESHUT_GRACE_PERIOD"] = configured
        coordinator = Coordinator(propagation_delay=0, environ=environ)
        with caplog.at_level(logging.INFO, logger="graceshut"):
            async with coordinator.lifespan(signals=False):
                assert coordinator.settings.grace_period == used
                assert server.requests == 1
    drift = [r for r in caplog.records if "terminationGracePeriodSeconds is 20s" in r.getMessage()]
    assert bool(drift) == warned
    if warned:
        assert drift[0].levelno == logging.WARNING
        assert f"GRACESHUT_GRACE_PERIOD is {float(configured or 0):g}s" in drift[0].getMessage()
        assert f"using {used:g}s, the smaller" in drift[0].getMessage()
    report = coordinator.report
    assert report is not None
    assert report.budget == pytest.approx(used - 1)


async def test_startup_without_the_api_keeps_the_configuration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No API access at startup: the configured grace period stands and one line says why."""
    coordinator = Coordinator(grace_period=45, deadline_source="api", environ={})
    with caplog.at_level(logging.WARNING, logger="graceshut"):
        async with coordinator.lifespan(signals=False):
            assert coordinator.settings.grace_period == 45
    (line,) = [r.getMessage() for r in caplog.records if "not checked" in r.getMessage()]
    assert "not running in a pod" in line


async def test_startup_does_not_ask_without_the_opt_in(api: ApiServer) -> None:
    """deadline_source='config' (the default) never reads the pod."""
    coordinator = Coordinator(propagation_delay=0, environ=api.environment())
    async with coordinator.lifespan(signals=False):
        pass
    assert api.requests == 0
    assert coordinator.report is not None
    assert coordinator.report.deadline_source == "config"


def test_the_deadline_is_the_deletion_timestamp_less_the_margin() -> None:
    """deletionTimestamp 10 s from now, 1 s margin: the deadline is 9 s from now."""
    now = time.monotonic()
    timing = PodTiming(time.time() + 10, 30, 60)
    assert deadline_from(timing, now, 1.0) == pytest.approx(now + 9, abs=0.1)


def test_a_node_clock_behind_never_stretches_past_the_grace_from_the_trigger() -> None:
    """A timestamp that looks 40 s away with a 15 s deletion: 15 s from the trigger it is."""
    now = time.monotonic()
    timing = PodTiming(time.time() + 40, 15, 60)
    assert deadline_from(timing, now, 1.0) == pytest.approx(now + 14, abs=0.1)


def test_a_timestamp_before_the_trigger_falls_back_to_the_grace_period() -> None:
    """A node clock ahead puts the end before the trigger: the deletion's grace counts instead."""
    now = time.monotonic()
    timing = PodTiming(time.time() - 5, 15, 60)
    assert deadline_from(timing, now, 1.0) == pytest.approx(now + 14, abs=0.1)


def test_no_deletion_is_no_deadline() -> None:
    """A pod with no deletionTimestamp gives no deadline, and says so."""
    with pytest.raises(ApiUnavailable, match="no deletionTimestamp"):
        deadline_from(PodTiming(None, None, 30), time.monotonic(), 1.0)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"metadata": {"deletionGracePeriodSeconds": "15"}}', "is not a number"),
        (b'{"metadata": {"deletionTimestamp": 5}}', "is not a string"),
        (b'{"metadata": {}, "spec": {"terminationGracePeriodSeconds": true}}', "not a number"),
        (b'{"kind": "Status"}', "is not a pod object"),
    ],
)
def test_a_malformed_pod_is_named(body: bytes, why: str) -> None:
    """Fields of the wrong type are refused with a reason, not taken for a deadline."""
    with pytest.raises(ApiUnavailable, match=why):
        parse_pod(body)


def test_a_pod_object_is_read_whole() -> None:
    """The three timing fields of a pod, the timestamp in RFC 3339 with a Z."""
    body = json.dumps(
        {
            "metadata": {
                "deletionTimestamp": "2027-01-15T08:00:15Z",
                "deletionGracePeriodSeconds": 15,
            },
            "spec": {"terminationGracePeriodSeconds": 60},
        }
    ).encode()
    assert parse_pod(body) == PodTiming(1_800_000_015.0, 15.0, 60.0)
