"""The app's own shutdown steps, from the notes graceshut wrote as they began and ended.

graceshut in the app appends a line to ``GRACESHUT_PROGRESS_FILE`` as each step begins
and ends, and when the run is done; a SIGKILL leaves whole lines behind. From them: the
steps that finished, the one running when the process died, the ones never started,
and the deadline the app planned with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._run import Plan

STEPS = ("announce", "propagation", "drain", "flush", "release", "report")

#: What each step that a kill cuts off leaves undone, for the verdict.
_LOST = {
    "drain": "in-flight requests and drain handlers",
    "flush": "the flush handlers that save data",
    "release": "the release handlers that free locks and leases",
    "report": "the report and the termination message",
}


def app_steps(notes: list[dict[str, Any]], deleted_wall: float | None) -> dict[str, Any] | None:
    """The app's steps as JSON-ready data, ``t`` from the deletion; None without notes."""
    if not notes:
        return None
    began: list[str] = []
    ended: set[str] = set()
    spans: dict[str, dict[str, Any]] = {}
    budget = source = None
    done = False
    for note in notes:
        event, step = note.get("event"), note.get("step")
        if event == "start":
            budget, source = note.get("budget"), "config"
        elif event == "deadline":
            budget, source = note.get("budget"), note.get("source")
        elif event == "done":
            done = True
            source = note.get("deadline_source", source)
        elif event in ("begin", "end") and isinstance(step, str):
            t = _t(note, deleted_wall)
            if event == "begin":
                began.append(step)
                spans[step] = {"name": step, "t": t, "duration": None}
            else:
                ended.add(step)
                if step in spans and t is not None and spans[step]["t"] is not None:
                    spans[step]["duration"] = round(t - spans[step]["t"], 3)
    running = [step for step in began if step not in ended]
    cut_off: list[str] = []
    if not done:
        last = max((STEPS.index(s) for s in began if s in STEPS), default=-1)
        cut_off = running + [s for s in STEPS[last + 1 :] if s not in began]
    return {
        "finished": [s for s in began if s in ended],
        "running": None if done or not running else running[0],
        "cut_off": cut_off,
        "done": done,
        "deadline_source": source,
        "budget": budget,
        "steps": list(spans.values()),
    }


def describe_cut(steps: dict[str, Any], killer: str) -> str:
    """One line: what the kill cut off, and what that loses."""
    cut = steps["cut_off"]
    running = steps["running"]
    where = f"during the app's {running} step" if running else "between the app's steps"
    lost = [_LOST[s] for s in cut if s in _LOST]
    text = f"{killer} came {where}: {', '.join(cut)} never finished"
    if lost:
        text += f" ({'; '.join(lost)})"
    return text


def short_budget(plan: Plan, steps: dict[str, Any]) -> str:
    """Why a shorter grace period cut the app, when one did, and the way out."""
    if plan.grace_override is None or plan.grace_override >= plan.grace_period:
        return ""
    if steps.get("deadline_source") == "api" or not plan.api_deletion:
        return ""
    return (
        f". The app planned for {steps.get('budget')}s, but the deletion gave "
        f'{plan.grace_override:g}s: with deadline_source="api" (GRACESHUT_DEADLINE_SOURCE=api) '
        "and get on its own pod, graceshut reads the pod's deletionTimestamp at the trigger "
        "and shrinks the propagation delay and the drain first"
    )


def steps_text(steps: dict[str, Any] | None) -> list[str]:
    """The text form's lines on the app's steps and its deadline."""
    if steps is None:
        return []
    source = {"api": "the API server's deletionTimestamp", "config": "its configuration"}
    budget = steps.get("budget")
    line = f"app steps: {', '.join(steps['finished']) or 'none'} finished" + (
        f"; cut off: {', '.join(steps['cut_off'])}" if steps["cut_off"] else ""
    )
    deadline = (
        f"  deadline: {budget}s after the app's trigger, from "
        f"{source.get(str(steps.get('deadline_source')), steps.get('deadline_source'))}"
    )
    return ["", line, deadline]


def read_progress(path: Path) -> list[dict[str, Any]]:
    """The app's notes on its shutdown steps, one JSON object a line; [] without any."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    notes: list[dict[str, Any]] = []
    for line in lines:
        try:
            note = json.loads(line)
        except ValueError:
            continue  # a line cut by the SIGKILL
        if isinstance(note, dict):
            notes.append(note)
    return notes


def _t(note: dict[str, Any], deleted_wall: float | None) -> float | None:
    wall = note.get("wall")
    if deleted_wall is None or not isinstance(wall, (int, float)):
        return None
    return round(wall - deleted_wall, 3)
