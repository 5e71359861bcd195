"""The join's business rules on their own: outcomes, late, missing, blocked time."""

from __future__ import annotations

from typing import Any

import pytest
from procgraph.agents.join import rules

from procgraph.testing import FakeClock

MS = 1_000_000
S = 1_000_000_000
VIEWS = ("front", "back")
WINDOW = 3000 * MS
T0 = 1_800_000_000 * S  # a capture time in the wall clock's range



def v(capture: int = T0, after_ms: float = 50, defective: bool = False) -> dict[str, Any]:
    """A verdict as the join stores it: made ``after_ms`` after its capture."""
    return {"capture_ns": capture, "ts_ns": capture + int(after_ms * MS), "defective": defective}


@pytest.mark.parametrize(("front", "back", "outcome"), [
    (False, False, "ok"),
    (True, False, "defective_front"),
    (False, True, "defective_back"),
    (True, True, "defective_both"),
])
def test_every_outcome_of_a_complete_part(front: bool, back: bool, outcome: str) -> None:
    d = rules.decide({"front": v(defective=front), "back": v(defective=back)}, VIEWS, WINDOW)
    assert (d.outcome, d.reject, d.missing, d.late) == (outcome, outcome != "ok", [], [])
    assert not d.incomplete


def test_outcome_names_for_other_views() -> None:
    assert rules.outcome_name([], ("top", "side", "bottom")) == "ok"
    assert rules.outcome_name(["side"], ("top", "side", "bottom")) == "defective_side"
    assert rules.outcome_name(["bottom", "top"], ("top", "side", "bottom")) == \
        "defective_top_bottom"
    assert rules.outcome_name(["a", "b"], ("a", "b")) == "defective_both"
    assert rules.outcome_name(["only"], ("only",)) == "defective_only"


def test_missing_view_is_incomplete_with_the_fail_safe() -> None:
    d = rules.decide({"front": v()}, VIEWS, WINDOW)
    assert (d.outcome, d.reject, d.missing, d.late) == ("incomplete", True, ["back"], [])
    assert d.incomplete
    d = rules.decide({"back": v(defective=True)}, VIEWS, WINDOW, incomplete_reject=False)
    assert (d.outcome, d.reject, d.missing) == ("incomplete", False, ["front"])


def test_late_verdict_makes_the_part_incomplete_even_if_ok() -> None:
    part = {"front": v(after_ms=3001), "back": v()}
    d = rules.decide(part, VIEWS, WINDOW)
    assert (d.outcome, d.reject, d.missing, d.late) == ("incomplete", True, [], ["front"])
    # exactly at the window is still on time
    assert rules.decide({"front": v(after_ms=3000), "back": v()}, VIEWS, WINDOW).outcome == "ok"
    d = rules.decide(part, VIEWS, WINDOW, incomplete_reject=False)
    assert (d.outcome, d.reject) == ("incomplete", False)


def test_part_capture_is_the_earliest_view() -> None:
    assert rules.capture_ns({"front": v(T0 + 7), "back": v(T0 + 3)}) == T0 + 3


def test_bad_view_names_are_refused() -> None:
    for bad in ([], ["a", "a"], ["a", ""]):
        with pytest.raises(ValueError):
            rules.check_views(bad)


def test_missing_by_watermark_of_the_missing_view() -> None:
    clock = FakeClock()
    e = rules.Expiry(VIEWS, WINDOW, clock=clock)
    part = {"front": v(T0)}
    e.seen("front", T0)
    e.seen("back", T0 + WINDOW)  # back at the deadline exactly: may still come
    assert not e.expired(part)
    e.seen("front", T0 + 10 * WINDOW)  # the view we have moving on says nothing
    assert not e.expired(part)
    e.seen("back", T0 + WINDOW + 1)
    assert e.reason(part) == "watermark"
    e.seen("back", T0)  # watermarks never go back
    assert e.watermark_ns["back"] == T0 + WINDOW + 1


def test_missing_by_wall_clock_while_running() -> None:
    clock = FakeClock(T0 - 1 * S)  # the join has been running for a second
    e = rules.Expiry(VIEWS, WINDOW, clock=clock)
    part = {"front": v(T0)}
    for _ in range(39):  # ticking every 100 ms: 2.9 s after capture
        clock.advance(0.1)
        assert not e.alive()
        assert not e.expired(part)
    clock.advance(0.1)
    e.alive()
    assert not e.expired(part)  # 3.0 s: the window itself is still on time
    clock.advance(0.001)
    e.alive()
    assert e.reason(part) == "clock"


def test_time_not_running_does_not_count() -> None:
    """Blocked (backpressure, PLC away) or restarting: the wait starts again after the gap."""
    clock = FakeClock(T0)
    e = rules.Expiry(VIEWS, WINDOW, clock=clock)
    part = {"front": v(T0)}
    clock.advance(1.0)
    e.alive()
    clock.advance(4.0)  # no loop turn for 4 s: a handler blocked on a full output
    assert e.alive()
    assert not e.expired(part)  # 5 s after capture, but only 1 s of it running
    for _ in range(29):
        clock.advance(0.1)
        assert not e.alive()
    assert not e.expired(part)  # 2.9 s since the join came back
    clock.advance(0.2)
    e.alive()
    assert e.reason(part) == "clock"


def test_a_short_pause_is_not_a_gap() -> None:
    clock = FakeClock(T0)
    e = rules.Expiry(VIEWS, WINDOW, clock=clock, gap_s=0.5)
    clock.advance(0.5)
    assert not e.alive()
    clock.advance(0.501)
    assert e.alive()


def test_restart_counts_from_the_start_not_the_capture() -> None:
    """A new Expiry (a restarted join) waits a full window for parts captured long ago."""
    clock = FakeClock(T0 + 60 * S)
    e = rules.Expiry(VIEWS, WINDOW, clock=clock)
    part = {"front": v(T0)}
    assert not e.expired(part)
    for _ in range(30):
        clock.advance(0.1)
        e.alive()
    assert not e.expired(part)
    clock.advance(0.01)
    e.alive()
    assert e.expired(part)


def test_due_parts_oldest_first() -> None:
    clock = FakeClock(T0)
    e = rules.Expiry(VIEWS, WINDOW, clock=clock)
    pending = {"p2": {"front": v(T0 + 2 * MS)}, "p1": {"back": v(T0 + 1 * MS)},
               "p3": {"front": v(T0 + 10 * S)}}
    assert e.due(pending) == []
    e.seen("back", T0 + 5 * S)
    e.seen("front", T0 + 5 * S)
    assert e.due(pending) == ["p1", "p2"]


def test_start_order_moves_drops_and_cuts() -> None:
    order = rules.StartOrder()
    order.put("b", 20)
    order.put("a", 10)
    order.put("c", 20)
    assert order.before(21) == ["a", "b", "c"]
    assert order.before(20) == ["a"]
    order.put("a", 30)  # moved, not doubled
    assert (order.before(31), len(order)) == (["b", "c", "a"], 3)
    order.drop("b")
    order.drop("nobody")
    assert order.before(10**20) == ["c", "a"]


def test_the_horizon_never_hides_a_part_that_is_due() -> None:
    """Every part the rules give up starts before the horizon, whatever the watermarks,
    the clock and the gaps: the join looks only there (random cases, against brute force)."""
    import random

    rnd = random.Random(12)
    for _ in range(300):
        clock = FakeClock(T0 + rnd.randrange(0, 20 * S))
        e = rules.Expiry(VIEWS, WINDOW, clock=clock)
        for view in VIEWS:
            if rnd.random() < 0.8:
                e.seen(view, T0 + rnd.randrange(0, 20 * S))
        clock.advance(rnd.random() * 8)
        e.alive()
        clock.advance(rnd.random() * 4)
        pending = {f"p{i}": {rnd.choice(VIEWS): v(T0 + rnd.randrange(0, 20 * S))}
                   for i in range(20)}
        order = rules.StartOrder()
        for key, part in pending.items():
            order.put(key, rules.capture_ns(part))
        due = e.due(pending)
        looked_at = order.before(e.horizon())
        assert set(due) <= set(looked_at)
        assert [k for k in looked_at if e.expired(pending[k])] == due
