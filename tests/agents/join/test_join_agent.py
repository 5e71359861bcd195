"""JoinAgent through the test harness: what it emits for every rule, and its state."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from procgraph.agents.join import JoinAgent
from procgraph.agents.messages import ModelInfo, PartOutcome, Trigger, Verdict

from procgraph.testing import AgentHarness, FakeClock

MS = 1_000_000
S = 1_000_000_000
T0 = 1_800_000_000 * S
MODEL = ModelInfo(name="m", version="1", sha256="0" * 64)



def verdict(key: str, camera: str, capture: int = T0, after_ms: float = 50,
            defective: bool = False, truth: str | None = None) -> Verdict:
    """A classifier's verdict on one view, made ``after_ms`` after the capture."""
    return Verdict(key=key, camera=camera, seq=0, capture_ns=capture,
                   ts_ns=capture + int(after_ms * MS), label="defective" if defective else "ok",
                   score=0.9, defective=defective, scores={}, inference_ms=1.0, model=MODEL,
                   truth=truth)


def harness(clock: FakeClock | None = None, state: Any = None,
            **params: Any) -> AgentHarness:
    """A harness around JoinAgent whose rules read ``clock`` (a fresh one by default)."""
    class ClockedJoin(JoinAgent):
        pass

    ClockedJoin.clock = staticmethod(clock or FakeClock())  # type: ignore[assignment]
    if state is None:
        return AgentHarness(ClockedJoin, params)
    return AgentHarness(ClockedJoin, params, state=state)


def outcomes(h: AgentHarness) -> list[PartOutcome]:
    return [o for o in h.sent["outcomes"] if isinstance(o, PartOutcome)]


@pytest.mark.parametrize(("front", "back", "expected"), [
    (False, False, "ok"), (True, False, "defective_front"),
    (False, True, "defective_back"), (True, True, "defective_both"),
])
def test_complete_part_gets_its_outcome(front: bool, back: bool, expected: str) -> None:
    with harness() as h:
        h.feed("verdicts", verdict("p1", "front", defective=front, truth="ok"))
        assert outcomes(h) == []
        h.feed("verdicts", verdict("p1", "back", T0 + 5 * MS, defective=back, truth="scratch"))
    [o] = outcomes(h)
    assert (o.key, o.outcome, o.reject, o.missing) == ("p1", expected, expected != "ok", [])
    assert (o.part_seq, o.plc_written_ns, o.capture_ns) == (None, None, T0)
    assert set(o.verdicts) == {"front", "back"}
    assert o.verdicts["back"].defective is back
    assert o.truth_defective is True


def test_views_map_camera_ids_to_names() -> None:
    views = {"cam-a": "top", "cam-b": "side", "cam-c": "bottom"}
    with harness(views=views) as h:
        h.feed("verdicts", [verdict("p", "cam-a", defective=True), verdict("p", "cam-b"),
                            verdict("p", "cam-c", defective=True)])
    [o] = outcomes(h)
    assert (o.outcome, sorted(o.verdicts)) == ("defective_top_bottom", ["bottom", "side", "top"])


def test_repeated_view_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        JoinAgent.Params(views={"a": "front", "b": "front"})


def test_out_of_order_arrivals() -> None:
    with harness() as h:
        h.feed("verdicts", [
            verdict("p2", "back", T0 + 250 * MS), verdict("p1", "back", T0, defective=True),
            verdict("p3", "front", T0 + 500 * MS), verdict("p2", "front", T0 + 250 * MS),
            verdict("p3", "back", T0 + 500 * MS), verdict("p1", "front", T0),
        ])
    assert [(o.key, o.outcome) for o in outcomes(h)] == [
        ("p2", "ok"), ("p3", "ok"), ("p1", "defective_back")]


def test_duplicate_and_decided_verdicts_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with harness() as h:
        h.feed("verdicts", [verdict("p1", "front"), verdict("p1", "front", defective=True)])
        assert "duplicate verdict for part p1 (front) ignored" in caplog.text
        h.feed("verdicts", verdict("p1", "back"))
        h.feed("verdicts", [verdict("p1", "back", defective=True), verdict("p1", "front")])
        assert "verdict for part p1 (back) ignored: already decided" in caplog.text
    assert [(o.key, o.outcome) for o in outcomes(h)] == [("p1", "ok")]  # the first one won


def test_unknown_camera_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with harness() as h:
        h.feed("verdicts", [verdict("p1", "left"), verdict("p1", "front")])
    assert outcomes(h) == []
    assert "unknown camera 'left'" in caplog.text


def test_late_verdict_gives_the_fail_safe() -> None:
    with harness(window_ms=1000) as h:
        h.feed("verdicts", [verdict("p1", "front", after_ms=1500), verdict("p1", "back")])
    [o] = outcomes(h)
    assert (o.outcome, o.reject, o.missing) == ("incomplete", True, [])


def test_fail_safe_may_pass() -> None:
    with harness(window_ms=1000, incomplete_reject=False) as h:
        h.feed("verdicts", [verdict("p1", "front", after_ms=1500), verdict("p1", "back")])
    [o] = outcomes(h)
    assert (o.outcome, o.reject) == ("incomplete", False)


def test_missing_view_by_watermark() -> None:
    with harness(window_ms=1000) as h:
        h.feed("verdicts", [verdict("p1", "front", T0), verdict("p2", "front", T0 + 2 * S)])
        assert outcomes(h) == []
        # back moves past p1's capture + window: p1's back is not coming
        h.feed("verdicts", verdict("p2", "back", T0 + 2 * S))
    assert [(o.key, o.outcome, o.missing) for o in outcomes(h)] == [
        ("p1", "incomplete", ["back"]), ("p2", "ok", [])]
    assert outcomes(h)[0].truth_defective is None


def test_a_view_captured_after_the_window_completes_its_part_once() -> None:
    """Its own watermark passes the part's deadline as it completes it: one outcome."""
    with harness(window_ms=1000) as h:
        h.feed("verdicts", [verdict("p1", "front", T0), verdict("p1", "back", T0 + 2 * S)])
    [o] = outcomes(h)
    assert (o.key, o.outcome) == ("p1", "ok")


def test_missing_view_by_wall_clock_while_running() -> None:
    clock = FakeClock(T0)
    with harness(clock, window_ms=1000) as h:
        h.feed("verdicts", verdict("p1", "back", T0))
        for _ in range(10):  # the runtime ticks about every 100 ms
            clock.advance(0.1)
            h.agent.tick()
        assert outcomes(h) == []  # exactly one window: still on time
        clock.advance(0.05)
        h.agent.tick()
    [o] = outcomes(h)
    assert (o.key, o.outcome, o.reject, o.missing) == ("p1", "incomplete", True, ["front"])


def test_time_blocked_does_not_count() -> None:
    """A join blocked (the PLC writer away, its input full) gives no part up for it."""
    clock = FakeClock(T0)
    with harness(clock, window_ms=1000) as h:
        h.feed("verdicts", verdict("p1", "back", T0))
        clock.advance(0.2)
        h.agent.tick()
        clock.advance(5.0)  # no tick for 5 s: the loop was blocked
        h.feed("verdicts", verdict("p1", "front", T0 + 30 * MS))
    [o] = outcomes(h)
    assert o.outcome == "ok"


def test_time_blocked_restarts_the_wait() -> None:
    clock = FakeClock(T0)
    with harness(clock, window_ms=1000) as h:
        h.feed("verdicts", verdict("p1", "back", T0))
        clock.advance(5.0)
        h.agent.tick()  # back after a gap: the wait starts again here
        for _ in range(9):
            clock.advance(0.1)
            h.agent.tick()
        assert outcomes(h) == []
        clock.advance(0.2)
        h.agent.tick()
    assert [o.outcome for o in outcomes(h)] == ["incomplete"]


def test_restart_keeps_pending_and_decided_parts() -> None:
    clock = FakeClock(T0)
    with harness(clock) as first:
        first.feed("verdicts", [verdict("p1", "front"), verdict("p2", "front"),
                                verdict("p2", "back", defective=True)])
    assert [o.key for o in outcomes(first)] == ["p2"]
    clock.advance(60)  # down for a minute: p1's window passed while nobody was running
    with harness(clock, state=first.state) as second:
        second.agent.tick()
        assert outcomes(second) == []  # the restart does not count toward p1's window
        second.feed("verdicts", [verdict("p2", "front"), verdict("p1", "back", defective=True)])
    assert [(o.key, o.outcome) for o in outcomes(second)] == [("p1", "defective_back")]


def test_one_view_jumping_ahead_gives_up_the_skipped_parts_and_joins_the_rest() -> None:
    """Front misses p10..p19 (a camera back from a stall skips the parts it missed: its keys
    jump ahead): those parts turn incomplete by the watermark, as soon as front has moved
    on; every later part joins."""
    with harness(window_ms=1000) as h:
        for i in range(40):
            at = T0 + i * 100 * MS
            if not 10 <= i < 20:
                h.feed("verdicts", verdict(f"p{i}", "front", at))
            h.feed("verdicts", verdict(f"p{i}", "back", at + 3 * MS))
        assert h.agent.pending == {}  # nothing left waiting: no clock needed
    got = {o.key: o for o in outcomes(h)}
    assert len(got) == len(outcomes(h)) == 40  # every part decided, once
    assert {k for k, o in got.items() if o.outcome == "incomplete"} == {
        f"p{i}" for i in range(10, 20)}
    assert all(got[f"p{i}"].missing == ["front"] for i in range(10, 20))
    assert all(got[f"p{i}"].outcome == "ok" for i in [*range(10), *range(20, 40)])


def test_a_view_restarted_with_another_counter_never_stalls_the_join() -> None:
    """Front's keys jump 50 ahead for good (a free-running camera restarted with another
    counter): nothing matches any more, yet every part is decided once, the half-joined
    parts are given up (watermark or clock) and the join keeps going when the keys agree
    again."""
    clock = FakeClock(T0)
    with harness(clock, window_ms=1000) as h:
        for i in range(60):
            at = T0 + i * 100 * MS
            clock.advance(0.1)
            h.feed("verdicts", verdict(f"p{i + (50 if i >= 10 else 0)}", "front", at))
            h.feed("verdicts", verdict(f"p{i}", "back", at + 3 * MS))
            h.agent.tick()
        assert len(h.agent.pending) <= 25  # bounded by the window, not growing
        for _ in range(15):
            clock.advance(0.1)
            h.agent.tick()
        assert h.agent.pending == {}
        # the views agree on keys again (both cameras on one trigger): parts join at once
        for i in range(200, 210):
            at = T0 + 8 * S + (i - 200) * 100 * MS
            clock.advance(0.1)
            h.feed("verdicts", [verdict(f"p{i}", "front", at), verdict(f"p{i}", "back", at)])
    out = outcomes(h)
    keys = [o.key for o in out]
    assert len(keys) == len(set(keys)), "a part decided twice"
    assert set(keys) == {f"p{i}" for i in range(110)} | {f"p{i}" for i in range(200, 210)}
    assert [o.outcome for o in out[-10:]] == ["ok"] * 10
    assert all(o.outcome == "ok" for o in out if o.key in {f"p{i}" for i in range(10)})


def trigger(key: str, at: int = T0) -> Trigger:
    """The part trigger's message for part ``key``, triggered at ``at``."""
    return Trigger(key=key, seq=int(key.rsplit("-", 1)[-1]), trigger_ns=at)


def test_a_triggered_part_no_camera_saw_is_decided_incomplete() -> None:
    """Both cameras skipped the trigger: without the trigger input the part never reached
    the join; with it the part gets the fail-safe once its window from the trigger passed."""
    clock = FakeClock(T0)
    with harness(clock, window_ms=1000, trigger_grace_ms=0) as h:
        h.feed("triggers", trigger("part-7"))
        for _ in range(10):
            clock.advance(0.1)
            h.agent.tick()
        assert outcomes(h) == []  # one window from the trigger: still on time
        clock.advance(0.05)
        h.agent.tick()
        assert h.agent.announced == {}
    [o] = outcomes(h)
    assert (o.key, o.outcome, o.reject, o.missing) == (
        "part-7", "incomplete", True, ["front", "back"])
    assert (o.capture_ns, o.verdicts, o.truth_defective) == (T0, {}, None)


def test_a_triggered_part_whose_views_came_is_joined_once() -> None:
    clock = FakeClock(T0)
    with harness(clock, window_ms=1000) as h:
        h.feed("triggers", trigger("part-1"))
        h.feed("verdicts", verdict("part-1", "front", T0 + 5 * MS))
        assert h.agent.announced == {}  # a view came: pending from now on
        h.feed("verdicts", verdict("part-1", "back", T0 + 6 * MS))
        h.feed("triggers", trigger("part-1"))  # again (redelivered): already decided
        clock.advance(5)
        h.agent.tick()
    assert [(o.key, o.outcome) for o in outcomes(h)] == [("part-1", "ok")]


def test_a_camera_moving_on_gives_up_an_unseen_triggered_part() -> None:
    """Event time: once a camera's frames are captured past the trigger plus the window, the
    part it never sent is given up, before the wall-clock wait."""
    clock = FakeClock(T0)
    with harness(clock, window_ms=1000, trigger_grace_ms=500) as h:
        h.feed("triggers", [trigger("part-1"), trigger("part-2", T0 + 2 * S)])
        h.feed("verdicts", verdict("part-2", "front", T0 + 1400 * MS))
        assert outcomes(h) == []  # not past the trigger + grace + window yet
        h.feed("verdicts", verdict("part-2", "front", T0 + 2 * S))
    assert [(o.key, o.missing) for o in outcomes(h)] == [("part-1", ["front", "back"])]


def test_a_restart_keeps_the_announced_parts() -> None:
    clock = FakeClock(T0)
    with harness(clock, window_ms=1000, trigger_grace_ms=0) as first:
        first.feed("triggers", trigger("part-3"))
    clock.advance(60)
    with harness(clock, window_ms=1000, trigger_grace_ms=0, state=first.state) as second:
        assert second.agent.announced == {"part-3": T0}
        for _ in range(11):  # the restart does not count: a window of ticks from here
            clock.advance(0.1)
            second.agent.tick()
    assert [(o.key, o.outcome) for o in outcomes(second)] == [("part-3", "incomplete")]


def test_a_camera_lagging_behind_its_trigger_does_not_make_the_part_incomplete() -> None:
    """A camera may capture a part up to its max_trigger_age_ms after the trigger: a verdict
    made within the window of that late capture still joins (trigger_grace_ms)."""
    clock = FakeClock(T0)
    with harness(clock, window_ms=1000, trigger_grace_ms=2000) as h:
        h.feed("triggers", trigger("part-4"))
        for _ in range(25):  # 2.5 s: past the window from the trigger, not from the capture
            clock.advance(0.1)
            h.agent.tick()
        assert outcomes(h) == []
        late = T0 + 1800 * MS  # both cameras captured it 1.8 s after the trigger
        h.feed("verdicts", [verdict("part-4", "front", late), verdict("part-4", "back", late)])
    assert [(o.key, o.outcome) for o in outcomes(h)] == [("part-4", "ok")]
