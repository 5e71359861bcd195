"""ModbusPlcAgent through the test harness, writing to a real simulated PLC (Modbus TCP)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from procgraph.agents.messages import PartOutcome
from procgraph.agents.modbus import ModbusPlcAgent
from procgraph.agents.modbus.sim import SimulatedPlc

from pgtest_modbus import HOST, assert_clean, keys_of, wait_until
from procgraph.testing import AgentHarness


def outcome(key: str, name: str = "ok", reject: bool | None = None) -> PartOutcome:
    """A joined outcome as the join emits it (no part_seq yet)."""
    return PartOutcome(key=key, outcome=name, reject=name != "ok" if reject is None else reject,
                       capture_ns=time.time_ns(), verdicts={})


def writer(plc: SimulatedPlc, **params: object) -> AgentHarness:
    return AgentHarness(ModbusPlcAgent, {"host": HOST, "port": plc.port, **params})


def written(h: AgentHarness) -> list[PartOutcome]:
    return [o for o in h.sent["written"] if isinstance(o, PartOutcome)]


def test_writes_each_outcome_in_order_and_reports_it(plc: SimulatedPlc) -> None:
    names = ["ok", "defective_front", "defective_back", "defective_both", "incomplete"]
    with writer(plc) as h:
        h.feed("outcomes", [outcome(f"p{i}", n) for i, n in enumerate(names)])
    got = plc.wait_for_parts(5)
    assert [(p["key"], p["outcome"], p["reject"]) for p in got] == [
        (f"p{i}", n, n != "ok") for i, n in enumerate(names)]
    out = written(h)
    assert [(o.key, o.outcome, o.part_seq) for o in out] == [
        (p["key"], p["outcome"], p["seq"]) for p in got]
    assert all(o.plc_written_ns is not None for o in out)
    assert_clean(plc)


def test_a_redelivered_outcome_is_not_written_twice(plc: SimulatedPlc) -> None:
    with writer(plc) as h:
        h.feed("outcomes", [outcome("a"), outcome("b"), outcome("a"), outcome("c")])
    assert keys_of(plc.wait_for_parts(3)) == ["a", "b", "c"]
    assert [o.key for o in written(h)] == ["a", "b", "c"]
    time.sleep(0.1)
    assert len(plc.received) == 3
    assert_clean(plc)


def test_restart_remembers_written_keys(plc: SimulatedPlc) -> None:
    with writer(plc) as first:
        first.feed("outcomes", [outcome("a"), outcome("b")])
    with writer(plc) as second:  # a new process and no state: it knows the PLC's last part
        second.feed("outcomes", outcome("b"))
    assert written(second) and written(second)[0].part_seq == 2  # reported, not rewritten
    with AgentHarness(ModbusPlcAgent, {"host": HOST, "port": plc.port},
                      state=first.state) as third:
        third.feed("outcomes", [outcome("a"), outcome("b"), outcome("c")])
    assert [o.key for o in written(third)] == ["c"]
    assert keys_of(plc.wait_for_parts(3)) == ["a", "b", "c"]
    assert_clean(plc)


def test_plc_away_then_back_loses_nothing(plc: SimulatedPlc,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with writer(plc, backoff_max_s=0.2) as h:
        h.feed("outcomes", outcome("a"))
        plc.stop_thread()
        done = threading.Event()

        def feed() -> None:
            h.feed("outcomes", [outcome("b", "defective_front"), outcome("c")])
            done.set()

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        wait_until(lambda: "PLC unavailable" in caplog.text, 5, "a retry")
        assert not done.is_set()  # the handler waits for the PLC: nothing acknowledged
        plc.start_thread()
        t.join(10)
        assert done.is_set()
    assert keys_of(plc.wait_for_parts(3)) == ["a", "b", "c"]
    assert [o.part_seq for o in written(h)] == [1, 2, 3]
    assert_clean(plc)


def test_unknown_outcome_is_rejected_unless_aliased(
        plc: SimulatedPlc, caplog: pytest.LogCaptureFixture) -> None:
    with writer(plc, outcome_aliases={"defective_top": "defective_front"}) as h:
        h.feed("outcomes", [outcome("a", "defective_top"), outcome("b", "defective_side")])
    got = plc.wait_for_parts(2)
    assert [(p["outcome"], p["reject"]) for p in got] == [
        ("defective_front", True), ("incomplete", True)]
    assert "outcome 'defective_side' has no PLC code" in caplog.text
    assert [o.outcome for o in written(h)] == ["defective_front", "incomplete"]


def test_summary_line(plc: SimulatedPlc, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with writer(plc, summary_every_s=0.01) as h:
        h.agent.tick()
        time.sleep(0.02)
        h.agent.tick()
        assert "no part written to the PLC yet" in caplog.text
        h.feed("outcomes", [outcome("a"), outcome("b", "defective_back"), outcome("c")])
        time.sleep(0.02)
        h.agent.tick()
    assert "3 parts to the PLC: defective_back 1, ok 2; yield 66.7%" in caplog.text


def test_join_params_are_refused() -> None:
    """The join lives in the join agent now: a PLC writer with join params is an error."""
    with pytest.raises(ValueError, match="window_ms"):
        ModbusPlcAgent.Params(window_ms=3000)  # type: ignore[call-arg]


def test_state_lost_with_the_broker_recovers_the_last_part_from_the_plc(
        plc: SimulatedPlc) -> None:
    """The writer's state gone (a broker that lost its data) and a new process: the part the
    PLC holds is read back at connect, not written again, and seq continues after it."""
    with writer(plc) as first:
        first.feed("outcomes", [outcome("a"), outcome("b"), outcome("c", "defective_back")])
    plc.wait_for_parts(3)
    with writer(plc) as fresh:  # no state, no memory: only the PLC knows
        fresh.feed("outcomes", [outcome("c", "defective_back"), outcome("d"), outcome("e")])
    assert keys_of(plc.wait_for_parts(5)) == ["a", "b", "c", "d", "e"]
    assert [p["seq"] for p in plc.received] == [1, 2, 3, 4, 5]
    assert [(o.key, o.part_seq) for o in written(fresh)] == [("c", 3), ("d", 4), ("e", 5)]
    time.sleep(0.1)
    assert len(plc.received) == 5
    assert_clean(plc)


def test_state_lost_while_the_plc_has_not_taken_the_last_part_yet(plc: SimulatedPlc) -> None:
    """The PLC still holds the last part unread (result_ready = 1) when a writer with no
    state connects: that part is not written again, the next waits for the PLC to take it."""
    with writer(plc) as first:
        first.feed("outcomes", outcome("a"))
        plc.wait_for_parts(1)
        plc.hold = True  # the PLC program stops taking parts: b stays in the mailbox
        first.feed("outcomes", outcome("b"))
    with writer(plc, handshake_timeout_s=5) as fresh:
        fresh.feed("outcomes", outcome("b"))  # already in the PLC's mailbox: skipped
        assert [(o.key, o.part_seq) for o in written(fresh)] == [("b", 2)]
        threading.Timer(0.3, lambda: setattr(plc, "hold", False)).start()
        fresh.feed("outcomes", outcome("c"))  # waits until the PLC took b
    assert keys_of(plc.wait_for_parts(3)) == ["a", "b", "c"]
    assert [p["seq"] for p in plc.received] == [1, 2, 3]
    assert_clean(plc)


def test_a_part_another_writer_put_in_the_plc_is_adopted_on_reconnect(
        plc: SimulatedPlc) -> None:
    """The connection drops, someone else writes a part meanwhile: on reconnect the writer
    takes the PLC's part as the last one (no rewrite, seq continues after it)."""
    from procgraph.agents.modbus.client import PlcWriter

    with writer(plc) as h:
        h.feed("outcomes", outcome("a"))
        plc.wait_for_parts(1)
        h.agent.plc.close()
        other = PlcWriter.tcp(HOST, plc.port, plc.regmap)
        other.connect()
        other.write_outcome(other.next_seq, "x", "ok", False)
        other.close()
        h.feed("outcomes", [outcome("x"), outcome("b")])
    assert keys_of(plc.wait_for_parts(3)) == ["a", "x", "b"]
    assert [p["seq"] for p in plc.received] == [1, 2, 3]
    assert_clean(plc)
