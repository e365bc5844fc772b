"""When each step must end: the deadline arithmetic, with no event loop."""

from __future__ import annotations

import time

from graceshut import Phase
from graceshut._budget import Run, elastic_end, reserved_after, step_end


def test_each_phase_reserves_what_the_later_ones_need() -> None:
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
    deadline = time.monotonic() + 30
    assert step_end(deadline, need=5, reserved=10) == deadline - 10


def test_an_overcommitted_step_shares_in_proportion() -> None:
    deadline = time.monotonic() + 10
    # 10 s left for a step that wants 10 s and later steps that want 10 s: half each. The
    # step ends halfway through what was left when it was asked (a moment after the line
    # above, however long that moment on a loaded machine).
    asked = time.monotonic()
    end = step_end(deadline, need=10, reserved=10)
    left_after = deadline - time.monotonic()
    assert left_after / 2 <= deadline - end <= (deadline - asked) / 2


def test_the_propagation_delay_gives_way_before_the_handlers() -> None:
    deadline = time.monotonic() + 10
    assert elastic_end(deadline, want=30, reserved=8) == deadline - 8, "cut to what is left"
    # Only when the handlers alone need more than what is left does it get a share.
    end = elastic_end(deadline, want=10, reserved=30)
    assert 0 < end - time.monotonic() < 10


def test_past_the_deadline_every_step_ends_at_once() -> None:
    deadline = time.monotonic() - 1
    assert step_end(deadline, need=5, reserved=5) == deadline


def test_a_run_records_each_step_from_its_start() -> None:
    run = Run("test", start=time.monotonic(), budget=10)
    with run.step("announce"):
        time.sleep(0.01)
    (step,) = run.phases
    step_ended = step.started + step.duration
    assert step.name == "announce"
    assert step.duration >= 0.01
    assert 0 <= step.started < step_ended <= time.monotonic() - run.start
    assert 0 < run.remaining() <= 10 - step_ended, "counted from the run's start"
