"""PlcWriter, the Modbus client: handshake, retries, idempotency, against real Modbus TCP
servers on free loopback ports: the simulated PLC (pymodbus server), a proxy that loses one
response, and pyModbusTCP's server with the test playing the PLC program."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable

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


def test_key_too_long_is_refused_before_any_io() -> None:
    # Nothing listens on this port: a ValueError (not PlcUnavailable) proves no I/O happened.
    w = PlcWriter.tcp(HOST, free_port())
    with pytest.raises(ValueError, match=r"33 characters.*at most 32.*never truncated"):
        w.write_outcome(1, "P" * 33, "ok", False)
    assert not w.connected


@pytest.mark.parametrize(
    "regmap",
    [RegisterMap(), RegisterMap(unit_id=3, base=200, use_coil_for_ready=True, ready_coil=21)],
    ids=["holding-ready", "coil-ready"],
)
def test_parts_arrive_in_order_with_handshake(
    plc_factory: Callable[..., SimulatedPlc], regmap: RegisterMap
) -> None:
    plc = plc_factory(regmap)
    w = writer_for(plc)
    names = list(OUTCOME_CODES)
    sent = []
    for i in range(25):
        part = {
            "seq": w.next_seq,
            "key": f"part-{i:05d}",
            "outcome": names[i % 5],
            "reject": i % 5 != 0,
        }
        w.write_outcome(timeout_s=2.0, **part)
        sent.append(part)
    got = plc.wait_for_parts(25)
    # The sim takes a part only when result_ready=1; any stale data (flag before data, or
    # data overwritten before the PLC took it) would show up as a mismatch or duplicate.
    assert [{k: p[k] for k in ("seq", "key", "outcome", "reject")} for p in got] == sent
    assert [p["seq"] for p in got] == list(range(1, 26))
    assert_clean(plc)
    s = plc.summary()
    assert s["parts"] == 25 and s["rejects"] == 20
    assert s["outcomes"] == dict.fromkeys(names, 5)
    w.close()


def test_writer_waits_for_plc_to_take_previous_part(plc: SimulatedPlc) -> None:
    w = writer_for(plc)
    plc.hold = True  # PLC program stalled: result_ready stays 1
    w.write_outcome(1, "first", "ok", False)
    t0 = time.monotonic()
    with pytest.raises(PlcUnavailable, match=r"did not clear result_ready.*first"):
        w.write_outcome(2, "second", "defective_front", True, timeout_s=0.3)
    assert time.monotonic() - t0 < 2
    state = w.read_state()
    assert (state.seq, state.key, state.ready) == (1, "first", True)  # not overwritten
    plc.hold = False
    w.write_outcome(2, "second", "defective_front", True, timeout_s=2)
    assert keys_of(plc.wait_for_parts(2)) == ["first", "second"]
    assert_clean(plc)
    w.close()


def test_plc_restart_on_same_port(plc: SimulatedPlc) -> None:
    w = writer_for(plc)
    w.write_outcome(1, "p1", "ok", False)
    w.write_outcome(2, "p2", "ok", False)
    plc.wait_for_parts(2)
    plc.stop_thread()
    with pytest.raises(PlcUnavailable, match=rf"127\.0\.0\.1:{plc.port}.*reachable"):
        w.write_outcome(3, "p3", "incomplete", True)
    with pytest.raises(PlcUnavailable):
        w.write_outcome(3, "p3", "incomplete", True)  # still down: retrying is harmless
    plc.start_thread()  # same object, same port, retained registers
    w.write_outcome(3, "p3", "incomplete", True)
    w.write_outcome(3, "p3", "incomplete", True)  # a redelivery: no second write
    assert keys_of(plc.wait_for_parts(3)) == ["p1", "p2", "p3"]
    # A new writer process: picks up the PLC's last part, does not rewrite it.
    w2 = writer_for(plc)
    assert (w2.last_written_seq, w2.last_written_key, w2.next_seq) == (3, "p3", 4)
    w2.write_outcome(3, "p3", "incomplete", True)
    w2.write_outcome(w2.next_seq, "p4", "ok", False)
    assert keys_of(plc.wait_for_parts(4)) == ["p1", "p2", "p3", "p4"]
    assert_clean(plc)
    w.close()
    w2.close()


def test_lost_ack_of_ready_flag_is_not_written_twice(
    plc: SimulatedPlc, proxy_factory: Callable[[int], DroppingProxy]
) -> None:
    proxy = proxy_factory(plc.port)
    w = writer_for(plc, proxy.port)
    w.write_outcome(1, "a", "ok", False)
    proxy.drop_response_to = 6  # write single register = result_ready := 1
    with pytest.raises(PlcUnavailable):
        w.write_outcome(2, "b", "defective_both", True)
    assert proxy.dropped == [6]
    assert keys_of(plc.wait_for_parts(2)) == ["a", "b"]  # it did go through
    before = len(proxy.requests)
    w.write_outcome(2, "b", "defective_both", True)  # the caller's retry
    retry_requests = proxy.requests[before:]
    assert retry_requests and set(retry_requests) == {3}, retry_requests  # reads only
    w.write_outcome(3, "c", "ok", False)
    assert keys_of(plc.wait_for_parts(3)) == ["a", "b", "c"]
    assert_clean(plc)
    w.close()


def test_lost_ack_of_data_write_still_flags_the_part_once(
    plc: SimulatedPlc, proxy_factory: Callable[[int], DroppingProxy]
) -> None:
    proxy = proxy_factory(plc.port)
    w = writer_for(plc, proxy.port)
    proxy.drop_response_to = 16  # write multiple registers = the data block
    with pytest.raises(PlcUnavailable):
        w.write_outcome(1, "x", "defective_front", True)
    assert proxy.dropped == [16]
    before = len(proxy.requests)
    w.write_outcome(1, "x", "defective_front", True)
    retry_requests = proxy.requests[before:]
    assert 16 not in retry_requests and retry_requests.count(6) == 1, retry_requests
    assert keys_of(plc.wait_for_parts(1)) == ["x"]
    w.write_outcome(2, "y", "ok", False)
    assert keys_of(plc.wait_for_parts(2)) == ["x", "y"]
    assert_clean(plc)
    w.close()


def test_wrong_base_address_gives_clear_error(plc: SimulatedPlc) -> None:
    w = PlcWriter.tcp(HOST, plc.port, RegisterMap(base=1000))
    with pytest.raises(PlcUnavailable, match=r"illegal data address.*base address"):
        w.connect()
    assert not w.connected


def test_writer_against_pymodbustcp_server() -> None:
    """PlcWriter against pyModbusTCP's server; the PLC program here decodes the registers
    by hand from the documented layout (not with RegisterMap.decode)."""
    from pyModbusTCP.server import DataBank, ModbusServer

    port = free_port()
    bank = DataBank()
    server = ModbusServer(HOST, port, no_block=True, data_bank=bank)
    server.start()
    taken: list[tuple[int, str, int, int]] = []
    stale: list[str] = []
    stop = threading.Event()
    base, ready_addr = 40, 60

    def plc_program() -> None:
        while not stop.wait(0.005):
            if bank.get_holding_registers(ready_addr, 1) != [1]:
                continue
            r = bank.get_holding_registers(base, 20)
            assert r is not None
            seq = r[0] * 65536 + r[1]
            key = b"".join(struct.pack(">H", x) for x in r[2:18]).rstrip(b"\0").decode()
            if taken and taken[-1][1] == key:
                stale.append(key)
            taken.append((seq, key, r[18], r[19]))
            bank.set_holding_registers(ready_addr, [0])

    program = threading.Thread(target=plc_program, daemon=True)
    program.start()
    try:
        w = PlcWriter.tcp(HOST, port, RegisterMap(base=base))
        w.connect()
        parts = [(1, "front+back-1", "ok", False), (2, "K2", "defective_both", True)]
        parts += [(3, "Z" * 32, "incomplete", True), (4, "k4", "defective_front", True)]
        for p in parts:
            w.write_outcome(*p, timeout_s=2)
        wait_until(lambda: len(taken) >= 4, what="4 parts taken")
        w.write_outcome(4, "k4", "defective_front", True)  # redelivery: not written again
        w.close()
    finally:
        stop.set()
        program.join(2)
        server.stop()
    assert taken == [(s, k, OUTCOME_CODES[o], int(r)) for s, k, o, r in parts]
    assert stale == []
