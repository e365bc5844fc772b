"""The verdict as a JUnit XML report (``--junit-xml``): one test case per check.

CI systems (GitLab, Jenkins, GitHub Actions through a reporter) show each case: the
app got ready, no failed request, no SIGKILL, the exit status, the preStop hook, and
each handler of the app's shutdown report.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

SUITE = "graceshut simulate"
CLASS = "graceshut.simulate"


def checks(data: dict[str, Any]) -> list[tuple[str, str | None, bool]]:
    """(name, why it failed or None, skipped) for each check of a report (`to_dict`)."""
    found: list[tuple[str, str | None, bool]] = []
    found.append(("the app gets ready and takes load", data.get("error"), False))
    if data.get("error") is not None:
        return found
    requests = data["requests"]
    failed = f"{requests['failed']} of {requests['sent']} requests failed" + (
        f" ({_kinds(requests)}), the first at {requests['first_failure']:+.3f}s"
        if requests["failed"]
        else ""
    )
    found.append(("no failed request", failed if requests["failed"] else None, False))
    sigkill = None
    if data["sigkill"]:
        sigkill = " ".join(p for p in data["problems"] if "SIGKILL" in p or "PID 1" in p)
    found.append(("no SIGKILL", sigkill, False))
    exit_ = data["exit"]
    status = None if exit_["status"] == 0 else f"the app ended with {exit_['description']}"
    found.append(("exit status 0", status, False))
    prestop = data["prestop"]
    if prestop is None:
        found.append(("the preStop hook", None, True))
    else:
        why = None
        if prestop["overran"]:
            why = "still running when the grace period ran out"
        elif not prestop["ok"]:
            why = f"{prestop['action']}: {prestop['error']}"
        found.append(("the preStop hook", why, False))
    report = data.get("app_report") or {}
    for handler in report.get("handlers", []):
        outcome = handler.get("outcome")
        why = None if outcome == "ok" else f"{outcome}: {handler.get('error') or ''}".strip()
        found.append((f"handler {handler.get('name')} ({handler.get('phase')})", why, False))
    return found


def render(data: dict[str, Any], text: str = "") -> str:
    """The JUnit XML document for a report; *text* (the text report) goes to system-out."""
    cases = checks(data)
    suite = ET.Element(
        "testsuite",
        name=SUITE,
        tests=str(len(cases)),
        failures=str(sum(1 for _, why, _ in cases if why is not None)),
        skipped=str(sum(1 for *_, skipped in cases if skipped)),
        errors="0",
    )
    for name, why, skipped in cases:
        case = ET.SubElement(suite, "testcase", classname=CLASS, name=name, time="0")
        if skipped:
            ET.SubElement(case, "skipped", message="no preStop hook")
        elif why is not None:
            failure = ET.SubElement(case, "failure", message=why[:500], type="NotClean")
            failure.text = why
    if text:
        ET.SubElement(suite, "system-out").text = text
    suites = ET.Element("testsuites", name=SUITE)
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode")


def _kinds(requests: dict[str, Any]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in requests["failures"].items() if n)
