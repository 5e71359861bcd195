"""LiveState: counters, matching verdicts to previews, defect thumbnails, snapshots."""

from __future__ import annotations

import json

import pytest
from hmi_messages import decodes, outcome, preview, verdict
from procgraph.agents.hmi.state import LiveState


def test_counters_and_yield() -> None:
    state = LiveState(defects_kept=3)
    assert state.counters()["yield_pct"] is None
    kinds = ["ok", "ok", "ok", "defective_front", "defective_both", "incomplete", "ok", "ok"]
    for i, kind in enumerate(kinds):
        state.add_outcome(outcome(i, kind))
    c = state.counters()
    assert (c["parts"], c["ok"], c["defective"], c["incomplete"], c["rejected"]) == (8, 5, 2, 1, 3)
    assert c["yield_pct"] == 62.5
    assert c["by_outcome"] == {"ok": 5, "defective_front": 1, "defective_both": 1,
                               "incomplete": 1}


def test_redelivered_outcome_is_counted_once() -> None:
    state = LiveState()
    state.add_outcome(outcome(1, "ok"))
    state.add_outcome(outcome(1, "ok"))
    assert state.counters()["parts"] == 1


def test_preview_waits_for_its_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    state = LiveState()
    assert state.camera_jpeg("front") is None
    state.add_preview(preview(seq=1))  # no verdicts flowing yet: shown at once
    first = state.camera_jpeg("front")
    assert first is not None
    assert state.snapshot()["cameras"][0]["verdict"] is None
    state.add_verdict(verdict(seq=1, defective=True))
    cam = state.snapshot()["cameras"][0]
    assert cam["verdict"]["matched"] and cam["verdict"]["defective"]
    again = state.camera_jpeg("front")
    assert again is not None and again[1] > first[1] and again[0] != first[0]
    state.add_preview(preview(seq=2))  # held until its verdict arrives
    assert state.snapshot()["cameras"][0]["seq"] == 1
    state.add_verdict(verdict(seq=2))
    cam = state.snapshot()["cameras"][0]
    assert cam["seq"] == 2 and cam["verdict"]["seq"] == 2 and cam["verdict"]["matched"]
    state.add_verdict(verdict(seq=1, defective=True))  # a late verdict of an older frame
    assert state.snapshot()["cameras"][0]["verdict"]["seq"] == 2
    monkeypatch.setattr("procgraph.agents.hmi.state.HOLD_S", 0.0)
    state.add_preview(preview(seq=3))  # its verdict is late: shown with the latest, marked
    cam = state.snapshot()["cameras"][0]
    assert cam["seq"] == 3 and cam["verdict"]["seq"] == 2 and not cam["verdict"]["matched"]
    old = state.camera_jpeg("front", version=first[1])
    assert old == first, "a recent version is served as asked"
    latest = state.camera_jpeg("front", version=10_000)
    assert latest is not None and latest[1] == cam["version"]
    decodes(latest[0])


def test_defect_thumbnails_newest_first_and_bounded() -> None:
    state = LiveState(defects_kept=2)
    for seq in range(3):
        state.add_preview(preview("front", seq))
        state.add_preview(preview("back", seq))
    for seq in range(3):
        state.add_outcome(outcome(seq, "defective_front"))
    defects = state.snapshot()["defects"]
    assert [d["part_seq"] for d in defects] == [2, 1]
    newest = state.defect_jpeg(0)
    assert newest is not None
    assert decodes(newest).shape[0] == 120
    assert state.defect_jpeg(0, uid=defects[1]["uid"]) == state.defect_jpeg(1)
    assert state.defect_jpeg(2) is None
    state.add_outcome(outcome(9, "incomplete"))  # no preview of p9: a placeholder
    placeholder = state.defect_jpeg(0)
    assert placeholder is not None
    decodes(placeholder)


def test_defective_verdicts_fill_the_rejects_until_outcomes_flow() -> None:
    state = LiveState()
    state.add_preview(preview("front", 1))
    state.add_verdict(verdict("front", 1, defective=True))
    (d,) = state.snapshot()["defects"]
    assert d["outcome"] == "defective_front" and d["part_seq"] is None
    state.add_outcome(outcome(2, "ok"))
    state.add_verdict(verdict("front", 3, defective=True))
    assert len(state.snapshot()["defects"]) == 1, "with outcomes, verdicts add no defects"


def test_outcome_not_yet_written_to_a_plc() -> None:
    """part_seq and plc_written_ns are None until a PLC writer wrote the part."""
    state = LiveState()
    state.add_preview(preview("front", 4))
    state.add_preview(preview("back", 4))
    state.add_outcome(outcome(4, "defective_back", written=False))
    snap = state.snapshot()
    assert snap["counters"]["parts"] == 1 and snap["counters"]["defective"] == 1
    assert snap["last_outcome"]["part_seq"] is None and snap["last_outcome"]["key"] == "p4"
    assert snap["recent_parts"] == [{"key": "p4", "part_seq": None,
                                     "outcome": "defective_back"}]
    (d,) = snap["defects"]
    assert d["part_seq"] is None and d["key"] == "p4"
    decodes(state.defect_jpeg(0) or b"")
    json.dumps(snap, allow_nan=False)


def test_snapshot_is_strict_json() -> None:
    state = LiveState(title="T", graph="g")
    state.add_preview(preview("front", 1))
    v = verdict("front", 1)
    state.add_verdict(v.model_copy(update={"score": float("nan")}))
    snap = state.snapshot()
    assert snap["graph"] == "g" and snap["cameras"][0]["verdict"]["score"] is None
    json.dumps(snap, allow_nan=False)


def test_defects_kept_must_be_positive() -> None:
    with pytest.raises(ValueError, match="defects_kept"):
        LiveState(defects_kept=0)
