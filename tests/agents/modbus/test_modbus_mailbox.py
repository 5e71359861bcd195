"""The PLC mailbox of N result slots (docs/agents/modbus.md, "Mailbox of N slots"): layout,
the writer filling slots without waiting for each PLC scan, a PLC program written by hand
from the documented rules on pyModbusTCP's server, and kill -9 of the writer process and a
PLC restart in a running line, counting the parts at the PLC."""

from __future__ import annotations

import io
import os
import shutil
import signal
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from procgraph.agents.modbus.client import PlcUnavailable, PlcWriter
from procgraph.agents.modbus.registers import OUTCOME_CODES, RegisterMap
from procgraph.agents.modbus.sim import SimulatedPlc

from pgtest_modbus import (
    HOST,
    DroppingProxy,
    assert_clean,
    free_port,
    keys_of,
    wait_until,
    writer_for,
)
from procgraph.brokers import EmbeddedBroker
from procgraph.graph import load_graph
from procgraph.supervisor import Supervisor

HERE = Path(__file__).resolve().parent


def test_slot_layout_repeats_the_single_slot_block() -> None:
    one, four = RegisterMap(), RegisterMap(base=100, slots=4)
    assert (one.span_end, one.slot(0)) == (21, one)  # slots=1: today's map, unchanged
    assert four.slot_stride == 21 and four.span_end == 100 + 4 * 21
    assert [(s.data_address, s.ready_address) for s in map(four.slot, range(4))] == [
        (100, 120), (121, 141), (142, 162), (163, 183)]
    coils = RegisterMap(slots=3, use_coil_for_ready=True, ready_coil=10)
    assert coils.slot_stride == 20
    assert [(s.data_address, s.ready_address) for s in map(coils.slot, range(3))] == [
        (0, 10), (20, 11), (40, 12)]
    with pytest.raises(ValueError, match=r"slots must be 1\.\.64"):
        RegisterMap(slots=0)
    with pytest.raises(ValueError, match=r"slot must be 0\.\.3"):
        four.slot(4)


@pytest.mark.parametrize("regmap", [
    RegisterMap(base=10, slots=4),
    RegisterMap(unit_id=2, slots=3, use_coil_for_ready=True, ready_coil=5)],
    ids=["holding-ready", "coil-ready"])
def test_writer_fills_the_free_slots_without_waiting_for_the_plc(
        plc_factory: Callable[..., SimulatedPlc], regmap: RegisterMap) -> None:
    plc = plc_factory(regmap)
    plc.hold = True  # the PLC program does not scan: only the free slots can take parts
    w = writer_for(plc)
    for n in range(regmap.slots):
        w.write_outcome(w.next_seq, f"p{n}", "ok", False, timeout_s=0.5)
    with pytest.raises(PlcUnavailable, match=r"did not clear result_ready.*seq=1 key='p0'"):
        w.write_outcome(w.next_seq, "late", "defective_front", True, timeout_s=0.3)
    assert [w.read_state(i).key for i in range(regmap.slots)] == [
        f"p{n}" for n in range(regmap.slots)]  # nothing overwritten
    plc.hold = False  # one scan takes every slot, the lowest seq first
    w.write_outcome(w.next_seq, "late", "defective_front", True, timeout_s=2)
    for n in range(regmap.slots + 1, 3 * regmap.slots + 2):
        w.write_outcome(w.next_seq, f"p{n}", "ok", False, timeout_s=2)
    got = plc.wait_for_parts(3 * regmap.slots + 2)
    assert keys_of(got) == [f"p{n}" for n in range(regmap.slots)] + ["late"] + [
        f"p{n}" for n in range(regmap.slots + 1, 3 * regmap.slots + 2)]
    assert [p["seq"] for p in got] == list(range(1, 3 * regmap.slots + 3))
    assert_clean(plc)
    w.close()


def test_a_new_writer_continues_after_the_newest_slot(
        plc_factory: Callable[..., SimulatedPlc]) -> None:
    plc = plc_factory(RegisterMap(slots=4))
    first = writer_for(plc)
    for n in range(6):
        first.write_outcome(first.next_seq, f"p{n}", "ok", False)
    plc.wait_for_parts(6)
    first.close()
    fresh = writer_for(plc)  # no memory: the PLC's four slots hold p2..p5
    assert (fresh.last_written_seq, fresh.last_written_key, fresh.next_seq) == (6, "p5", 7)
    assert [fresh.delivered_seq(f"p{n}") for n in range(6)] == [None, None, 3, 4, 5, 6]
    fresh.write_outcome(6, "p5", "ok", False)  # redelivered: not written again
    fresh.write_outcome(fresh.next_seq, "p6", "ok", False)
    assert fresh.read_state(2).key == "p6"  # slot after p5's (slot 1)
    assert keys_of(plc.wait_for_parts(7)) == [f"p{n}" for n in range(7)]
    time.sleep(0.05)
    assert len(plc.received) == 7
    assert_clean(plc)
    fresh.close()


def test_mailbox_against_a_hand_written_plc_program_on_pymodbustcp() -> None:
    """pyModbusTCP's server; the PLC program is the documented one, decoding the registers
    by hand: each scan, take every slot whose flag is 1, the lowest seq first, and write its
    seq to taken_seq (right after the last slot) before clearing the flag."""
    from pyModbusTCP.server import DataBank, ModbusServer

    slots, base, stride = 3, 100, 21
    port = free_port()
    bank = DataBank()
    server = ModbusServer(HOST, port, no_block=True, data_bank=bank)
    server.start()
    taken: list[tuple[int, str, int, int]] = []
    per_scan: list[int] = []
    stop, paused = threading.Event(), threading.Event()

    def plc_program() -> None:
        while not stop.wait(0.01):
            if paused.is_set():
                continue
            ready = []
            for i in range(slots):
                r = bank.get_holding_registers(base + i * stride, stride)
                assert r is not None
                if r[20] == 1:
                    ready.append((r[0] * 65536 + r[1], i, r))
            for seq, i, r in sorted(ready):
                key = b"".join(struct.pack(">H", x) for x in r[2:18]).rstrip(b"\0").decode()
                taken.append((seq, key, r[18], r[19]))
                bank.set_holding_registers(base + slots * stride, [seq >> 16, seq & 0xFFFF])
                bank.set_holding_registers(base + i * stride + 20, [0])
            if ready:
                per_scan.append(len(ready))

    program = threading.Thread(target=plc_program, daemon=True)
    program.start()
    names = list(OUTCOME_CODES)
    parts = [(n + 1, f"K{n}", names[n % 5], n % 5 != 0) for n in range(12)]
    try:
        regmap = RegisterMap(base=base, slots=slots, taken_seq=True)
        assert regmap.taken_seq_address == 163
        w = PlcWriter.tcp(HOST, port, regmap)
        w.connect()
        for p in parts[:3]:
            w.write_outcome(*p, timeout_s=2)
        wait_until(lambda: len(taken) >= 3, what="3 parts taken")
        paused.set()  # the PLC busy elsewhere: the writer fills the 3 slots, then waits
        for p in parts[3:6]:
            w.write_outcome(*p, timeout_s=2)
        paused.clear()
        for p in parts[6:]:
            w.write_outcome(*p, timeout_s=2)
        wait_until(lambda: len(taken) >= 12, what="12 parts taken")
        w.write_outcome(*parts[-1], timeout_s=2)  # redelivery: not written again
        w.close()
        fresh = PlcWriter.tcp(HOST, port, regmap)
        fresh.connect()  # the PLC took the newest part (taken_seq 12): nothing to flag
        assert fresh.next_seq == 13
        fresh.close()
        time.sleep(0.05)
    finally:
        stop.set()
        program.join(2)
        server.stop()
    assert taken == [(s, k, OUTCOME_CODES[o], int(r)) for s, k, o, r in parts]
    assert 3 in per_scan  # the three parts written while it was busy, taken in one scan


GRAPH = """
name: mailbox
brokers: {{main: {{url: "{url}"}}}}
agents:
  src: {{class: "mailbox_agents:Outcomes", params: {{count: {count}, rate_hz: {rate}}}}}
  plc:
    class: procgraph.agents.modbus:ModbusPlcAgent
    inputs: {{outcomes: {{from: src.outcomes, policy: lossless}}}}
    params: {{host: 127.0.0.1, port: {port}, slots: {slots}, taken_seq: {taken},
              backoff_max_s: 0.2}}
"""


def test_a_part_left_unflagged_is_flagged_by_the_next_writer_with_taken_seq(
        plc_factory: Callable[..., SimulatedPlc]) -> None:
    """A writer that died between the data write and the flag (played here by writing the
    data block by hand): with taken_seq the next writer sees the PLC never took it and flags
    it; without, it counts as delivered (the residual window)."""
    for taken_seq, expect in ((True, ["a", "b", "c"]), (False, ["a", "c"])):
        regmap = RegisterMap(slots=2, taken_seq=taken_seq)
        plc = plc_factory(regmap)
        w = writer_for(plc)
        w.write_outcome(1, "a", "ok", False)
        plc.wait_for_parts(1)
        w._call("write", w._write_registers, regmap.slot(1).data_address,
                regmap.encode(2, "b", "defective_back", True))
        w.close()  # "killed": b's data is in slot 1, its flag never set
        fresh = writer_for(plc)
        assert fresh.delivered_seq("b") == 2  # b is not written again either way
        fresh.write_outcome(fresh.next_seq, "c", "ok", False)
        assert keys_of(plc.wait_for_parts(len(expect))) == expect
        assert plc.summary()["unflagged"] == ([] if taken_seq else ["b"])
        fresh.close()


@pytest.mark.parametrize("taken_seq", [False, True], ids=["flag-only", "taken-seq"])
def test_kill_9_of_the_writer_and_a_plc_restart_lose_and_double_nothing(
        valkey: EmbeddedBroker, tmp_path: Path, taken_seq: bool) -> None:
    """A line writing 4-slot mailbox parts at 100/s: the PLC writer process is killed twice
    and the PLC is restarted once. At the PLC every part arrives once, in seq order. Without
    taken_seq the only part a kill may cost is one written but never flagged (the documented
    residual window), which the simulated PLC names; with taken_seq, none."""
    count, slots = 500, 4
    plc = SimulatedPlc(HOST, free_port(), RegisterMap(slots=slots, taken_seq=taken_seq))
    plc.start_thread()
    shutil.copy(HERE / "mailbox_agents.py", tmp_path / "mailbox_agents.py")
    graph = tmp_path / "graph.yaml"
    graph.write_text(GRAPH.format(url=valkey.url, count=count, rate=100, port=plc.port,
                                  slots=slots, taken=str(taken_seq).lower()))
    out = io.StringIO()
    sup = Supervisor(load_graph(graph), out=out, colour=False)
    sup.start_in_thread()
    kills = 0
    try:
        writer = next(r for r in sup.replicas if r.agent.name == "plc")
        for at in (60, 160):
            wait_until(lambda at=at: len(plc.received) >= at, 30, f"{at} parts at the PLC")
            pid = writer.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            kills += 1
            wait_until(lambda pid=pid: writer.pid not in (None, pid), 20, "a new writer")
        wait_until(lambda: len(plc.received) >= 260, 30, "260 parts at the PLC")
        plc.stop_thread()  # the PLC power-cycled (retentive registers): the writer waits
        time.sleep(0.5)
        plc.start_thread()
        want = {f"part-{n}" for n in range(count)}
        wait_until(lambda: want <= set(keys_of(list(plc.received))) | set(plc.unflagged()),
                   40, "every part at the PLC")
        time.sleep(0.3)  # a duplicate, if any, would arrive now
    finally:
        sup.shutdown()
        plc.stop_thread()
        print(out.getvalue()[-3000:])
    keys = keys_of(plc.received)
    s = plc.summary()
    lost = sorted(want - set(keys))
    print(f"MAILBOX kill test (taken_seq {taken_seq}): {len(keys)} parts, lost {lost}, "
          f"unflagged {s['unflagged']}, gaps {s['gaps']}")
    assert s["duplicates"] == {} and len(keys) == len(set(keys)), s["duplicates"]
    assert s["violations"] == [] and s["invalid"] == [], s
    assert set(lost) <= set(s["unflagged"]) and len(s["unflagged"]) <= kills, (lost, s)
    if taken_seq:
        assert lost == [] and s["unflagged"] == [] and s["gaps"] == [], s
    assert [int(k.split("-")[1]) for k in keys] == sorted(int(k.split("-")[1]) for k in keys)
    assert len(s["gaps"]) <= len(s["unflagged"]), s["gaps"]


def test_a_writer_with_more_slots_than_the_plc_says_so(plc: SimulatedPlc) -> None:
    w = PlcWriter.tcp(HOST, plc.port, RegisterMap(slots=4))  # the PLC maps one slot
    with pytest.raises(PlcUnavailable, match=r"illegal data address.*mailbox slots"):
        w.connect()
    assert not w.connected


def test_lost_ack_of_the_flag_with_taken_seq_is_not_flagged_twice(
        plc_factory: Callable[..., SimulatedPlc],
        proxy_factory: Callable[[int], DroppingProxy]) -> None:
    """The flag reached the PLC, its response did not: taken_seq says the PLC took the part,
    so the retry does not flag it again."""
    plc = plc_factory(RegisterMap(slots=2, taken_seq=True))
    proxy = proxy_factory(plc.port)
    w = writer_for(plc, proxy.port)
    w.write_outcome(1, "a", "ok", False)
    proxy.drop_response_to = 6
    with pytest.raises(PlcUnavailable):
        w.write_outcome(2, "b", "defective_front", True)
    assert keys_of(plc.wait_for_parts(2)) == ["a", "b"]
    before = len(proxy.requests)
    w.write_outcome(2, "b", "defective_front", True)
    assert 6 not in proxy.requests[before:], proxy.requests[before:]
    w.write_outcome(3, "c", "ok", False)
    assert keys_of(plc.wait_for_parts(3)) == ["a", "b", "c"]
    time.sleep(0.05)
    assert len(plc.received) == 3
    assert_clean(plc)
    w.close()
