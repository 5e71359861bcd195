"""The HMI's event log, degraded banner, PLC link, latency, model changes and yield target."""

from __future__ import annotations

import time

from hmi_messages import outcome, verdict
from procgraph.agents.hmi.events import EventLog, health_events
from procgraph.agents.hmi.state import LiveState, percentile
from procgraph.agents.messages import ModelInfo

from procgraph.health import GroupLag, Heartbeat


def _row(agent: str, status: str = "ok", restarts: int = 0, alive: int = 1) -> dict:
    return {"agent": agent, "status": status, "alive": alive, "expected": 1,
            "restarts": restarts}


def _beat(agent: str, started: float = 1.0, ts: float | None = None) -> Heartbeat:
    return Heartbeat(graph="g", agent=agent, replica=0, pid=1, started=started,
                     ts=time.time() if ts is None else ts)


def test_health_events_down_back_restarted() -> None:
    assert health_events([], [_row("a")]) == []
    down = health_events([_row("a")], [_row("a", "down", alive=0)])
    assert down[0][:2] == ("bad", "agent_down") and "a is down" in down[0][2]
    back = health_events([_row("a", "down", alive=0)], [_row("a", restarts=1)])
    assert [k for _, k, _ in back] == ["agent_up", "agent_restarted"]


def test_event_log_merges_repeats() -> None:
    log = EventLog()
    log.add("warn", "incomplete", "1 part", 100.0, merge="incomplete", subject="p1")
    log.add("warn", "incomplete", "2 parts", 101.0, merge="incomplete", subject="p2")
    log.add("bad", "agent_down", "x down", 102.0)
    events = log.as_list()
    assert [e["kind"] for e in events] == ["agent_down", "incomplete"]
    assert events[1]["count"] == 2 and events[1]["subjects"] == ["p1", "p2"]
    assert events[1]["text"] == "2 parts"
    log.add("warn", "incomplete", "1 part", 200.0, merge="incomplete")  # too late: new line
    assert len(log.as_list()) == 3


def test_banner_and_events_from_heartbeats() -> None:
    state = LiveState()
    assert state.snapshot()["alerts"] == []
    state.set_health([_beat("clf"), _beat("plc")])
    state.set_health([_beat("plc")])  # clf's heartbeat is gone
    snap = state.snapshot()
    assert any(a["text"] == "clf down" for a in snap["alerts"])
    assert snap["events"][0]["kind"] == "agent_down"
    state.set_health([_beat("clf", started=2.0), _beat("plc")])  # back, restarted
    snap = state.snapshot()
    kinds = [e["kind"] for e in snap["events"]]
    assert sorted(kinds[:2]) == ["agent_restarted", "agent_up"]  # newest first
    assert [a["text"].split(" ")[:2] for a in snap["alerts"]] == [["clf", "restarted"]]


def test_incomplete_rejects_on_banner_and_log() -> None:
    state = LiveState()
    for seq in (1, 2, 3):
        state.add_outcome(outcome(seq, "incomplete"))
    snap = state.snapshot()
    (ev,) = [e for e in snap["events"] if e["kind"] == "incomplete"]
    assert ev["count"] == 3 and ev["subjects"] == ["p1", "p2", "p3"]
    assert "3 parts rejected incomplete" in ev["text"] and "back missing" in ev["text"]
    assert {"level": "bad", "text": "3 parts rejected incomplete"} in snap["alerts"]
    assert snap["defects"][0]["missing"] == ["back"]


def test_plc_link_last_write_and_stall() -> None:
    state = LiveState()
    assert state.snapshot()["plc"]["state"] == "unknown"
    state.add_outcome(outcome(7, "ok"))
    state.set_health([_beat("plc")], {"plc": GroupLag(lag=0, pending=0)})
    plc = state.snapshot()["plc"]
    assert plc["state"] == "ok" and plc["last_write"]["key"] == "p7"
    assert plc["last_write"]["part_seq"] == 7
    old = outcome(8, "ok").model_copy(update={"plc_written_ns": time.time_ns() - 30 * 10**9})
    state.add_outcome(old)  # the last write was 30 s ago, and 5 parts are waiting
    state.set_health([_beat("plc")], {"plc": GroupLag(lag=4, pending=1)})
    snap = state.snapshot()
    assert snap["plc"]["state"] == "stalled" and "5 parts waiting" in snap["plc"]["text"]
    assert any(e["kind"] == "plc_down" for e in snap["events"])
    assert {"level": "bad", "text": "PLC link stalled"} in snap["alerts"]
    state.set_health([], {"plc": GroupLag(lag=4, pending=1)})
    assert state.snapshot()["plc"]["state"] == "down"


def test_model_on_verdicts_and_rejects_and_model_change() -> None:
    state = LiveState()
    state.add_verdict(verdict("front", 1))
    state.add_outcome(outcome(2, "defective_front"))
    (d,) = state.snapshot()["defects"]
    assert d["cameras"]["front"]["model"] == "m 3"
    v = verdict("front", 3).model_copy(update={"model": ModelInfo(name="m", version="4",
                                                                  sha256="cd" * 32)})
    state.add_verdict(v)
    ev = state.snapshot()["events"][0]
    assert ev["kind"] == "model_changed" and "m 3 -> m 4" in ev["text"]


def test_latency_and_yield_target() -> None:
    assert percentile([], 50) is None
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    state = LiveState(yield_target_pct=80.0)
    for seq in range(1, 11):
        state.add_outcome(outcome(seq))
    snap = state.snapshot()
    assert snap["counters"]["yield_target_pct"] == 80.0
    lat = snap["latency"]
    assert lat["n"] == 10 and lat["p50_ms"] is not None and lat["p99_ms"] >= lat["p50_ms"]
