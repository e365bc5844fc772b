"""When each step must end: the deadline arithmetic, with no event loop."""

from __future__ import annotations

import time

import pytest

from graceshut import Phase
from graceshut._core._budget import Run, elastic_end, reserved_after, step_end


def test_each_phase_reserves_what_the_later_ones_need() -> None:
    """Each phase keeps back the sum of the longest timeouts of the phases after it."""
    needs = {Phase.ANNOUNCE: 1.0, Phase.DRAIN: 2.0, Phase.FLUSH: 3.0, Phase.RELEASE: 4.0,
             Phase.REPORT: 5.0}  # fmt: skip
    assert reserved_after(needs) == {
        Phase.REPORT: 0.0,
        Phase.RELEASE: 5.0,
        Phase.FLUSH: 9.0,
        Phase.DRAIN: 12.0,
        Phase.ANNOUNCE: 14.0,
    }


def test_a_step_with_room_ends_where_the_later_steps_begin() -> None:
    """With room for all, a step ends where the later steps' reserved time begins."""
    deadline = time.monotonic() + 30
    assert step_end(deadline, need=5, reserved=10) == deadline - 10


def test_an_overcommitted_step_shares_in_proportion() -> None:
    """Firm steps short of time share it in proportion to what they ask for."""
    deadline = time.monotonic() + 10
    # 10 s left for a step that wants 10 s and later steps that want 10 s: half each. The
    # step ends halfway through what was left when it was asked (a moment after the line
    # above, however long that moment on a loaded machine).
    asked = time.monotonic()
    end = step_end(deadline, need=10, reserved=10)
    left_after = deadline - time.monotonic()
    assert left_after / 2 <= deadline - end <= (deadline - asked) / 2


def test_an_elastic_step_gives_way_before_the_firm_ones() -> None:
    """The delay and the drain end where the later time begins, at once when it is past."""
    deadline = time.monotonic() + 10
    assert elastic_end(deadline, want=30, reserved=8, firm=8) == deadline - 8, "what is left"
    # The drain's handlers (4 s) and the firm phases (8 s) do not fit: the delay gets
    # nothing, and the drain's handlers what the firm phases leave.
    assert elastic_end(deadline, want=30, reserved=12, firm=8) < time.monotonic()
    assert elastic_end(deadline, want=4, reserved=8, firm=8) == deadline - 8


def test_only_overcommitted_firm_phases_make_every_step_share() -> None:
    """When the firm phases alone need more than what is left, an elastic step gets a share."""
    deadline = time.monotonic() + 10
    end = elastic_end(deadline, want=10, reserved=30, firm=30)
    assert 0 < end - time.monotonic() < 10


def test_an_elastic_step_never_ends_past_the_deadline() -> None:
    """Nothing reserved after it: it ends at the deadline itself."""
    deadline = time.monotonic() + 10
    assert elastic_end(deadline, want=5, reserved=0, firm=0) == deadline


def test_past_the_deadline_every_step_ends_at_once() -> None:
    """Past the deadline, a step ends at once."""
    deadline = time.monotonic() - 1
    assert step_end(deadline, need=5, reserved=5) == deadline


def test_a_run_records_each_step_from_its_start() -> None:
    """A run records each step's start (from the trigger) and its duration."""
    run = Run("test", start=time.monotonic(), budget=10)
    with run.step("announce"):
        time.sleep(0.01)
    (step,) = run.phases
    step_ended = step.started + step.duration
    assert step.name == "announce"
    assert step.duration >= 0.01
    assert 0 <= step.started < step_ended <= time.monotonic() - run.start
    assert 0 < run.remaining() <= 10 - step_ended, "counted from the run's start"


def test_the_worked_example_of_the_docs() -> None:
    """docs/budget.md: 14 s for a 5 s delay, a 3 s drain handler, flush 5 s, release 2 s."""
    needs = {Phase.ANNOUNCE: 0.0, Phase.DRAIN: 3.0, Phase.FLUSH: 5.0, Phase.RELEASE: 2.0,
             Phase.REPORT: 0.0}  # fmt: skip
    after = reserved_after(needs)
    firm = after[Phase.DRAIN]
    start = time.monotonic()
    deadline = start + 14
    propagation = elastic_end(deadline, 5, after[Phase.ANNOUNCE], firm)
    assert min(start + 5, propagation) - start == pytest.approx(4, abs=0.1)
    assert elastic_end(deadline, needs[Phase.DRAIN], firm, firm) - start == pytest.approx(
        7, abs=0.1
    )
    assert step_end(deadline, needs[Phase.FLUSH], after[Phase.FLUSH]) - start == pytest.approx(
        12, abs=0.1
    )
    # 8 s: the delay gets nothing, the drain 1 s, flush and release all they ask for.
    deadline = time.monotonic() + 8
    assert elastic_end(deadline, 5, after[Phase.ANNOUNCE], firm) < time.monotonic()
    assert elastic_end(deadline, 3, firm, firm) == deadline - 7
