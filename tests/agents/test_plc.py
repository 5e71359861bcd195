"""PLC side of the inspection line: register map, writer handshake, simulated PLC.

Every test talks to a real Modbus TCP server on a free loopback port: the simulated PLC
(pymodbus server) and, for an independent check of the register map, pyModbusTCP's server
with the test playing the PLC program.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from procgraph.agents.modbus.plc_client import PlcUnavailable, PlcWriter
from procgraph.agents.modbus.plc_sim import SimulatedPlc, run_in_thread
from procgraph.agents.modbus.registers import (
    OUTCOME_CODES,
    OUTCOME_NAMES,
    RegisterMap,
    decode,
    encode_outcome,
)
from pymodbus.client import ModbusTcpClient

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll ``cond`` until true or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


@pytest.fixture
def plc_factory() -> Iterator[Callable[..., SimulatedPlc]]:
    """Start simulated PLCs on free ports; stop them all at the end."""
    started: list[SimulatedPlc] = []

    def make(regmap: RegisterMap | None = None, port: int | None = None) -> SimulatedPlc:
        plc = run_in_thread(HOST, port or free_port(), regmap or RegisterMap())
        started.append(plc)
        return plc

    yield make
    for plc in started:
        plc.stop_thread()


@pytest.fixture
def plc(plc_factory: Callable[..., SimulatedPlc]) -> SimulatedPlc:
    """One simulated PLC with the default register map."""
    return plc_factory()


def writer_for(plc: SimulatedPlc, port: int | None = None) -> PlcWriter:
    """A connected writer for ``plc`` (optionally through another port, e.g. a proxy)."""
    w = PlcWriter.tcp(HOST, port or plc.port, plc.regmap, request_timeout_s=1.0)
    w.connect()
    return w


def keys_of(parts: list[dict[str, Any]]) -> list[str]:
    return [p["key"] for p in parts]


def assert_clean(plc: SimulatedPlc) -> None:
    """No duplicates, gaps, handshake violations or invalid data seen by the PLC."""
    s = plc.summary()
    assert s["duplicates"] == {}, s
    assert s["gaps"] == [], s
    assert s["violations"] == [], s
    assert s["invalid"] == [], s


# --------------------------------------------------------------------------- proxy
class DroppingProxy:
    """TCP proxy in front of a Modbus TCP server that can lose one response.

    ``drop_response_to = fc`` makes it forward the next request with that function code to
    the server (so the write happens) and then cut the connection instead of forwarding the
    response: the "write went through but the ack was lost" case. ``requests`` lists the
    function codes of every request forwarded.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.drop_response_to: int | None = None
        self.dropped: list[int] = []
        self.requests: list[int] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    @staticmethod
    def _read_frame(sock: socket.socket) -> bytes | None:
        buf = b""
        need = 7  # MBAP header: transaction, protocol, length, unit
        while len(buf) < need:
            try:
                chunk = sock.recv(need - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
            if len(buf) == 7 and need == 7:
                need = 6 + struct.unpack(">H", buf[4:6])[0]
        return buf

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((HOST, self.upstream_port))
            with self._lock:
                self._socks += [client, upstream]
            for src, dst, is_request in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, is_request), daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, is_request: bool) -> None:
        while (frame := self._read_frame(src)) is not None:
            fc = frame[7]
            with self._lock:
                if is_request:
                    self.requests.append(fc)
                drop = not is_request and self.drop_response_to == fc
                if drop:
                    self.drop_response_to = None
                    self.dropped.append(fc)
            if drop:
                break
            try:
                dst.sendall(frame)
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._accept_thread.join(2)
        for t in self._threads:
            t.join(2)


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[int], DroppingProxy]]:
    proxies: list[DroppingProxy] = []

    def make(upstream_port: int) -> DroppingProxy:
        p = DroppingProxy(upstream_port)
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.close()


# --------------------------------------------------------------------------- register map
def test_register_layout_and_byte_order() -> None:
    regs = encode_outcome(0x0001_2345, "AB-7", "defective_back", True)
    assert len(regs) == 20
    assert regs[:2] == [0x0001, 0x2345]  # u32, high word first
    assert regs[2:4] == [0x4142, 0x2D37]  # "AB", "-7": first char in the high byte
    assert regs[4:18] == [0] * 14  # NUL padded
    assert regs[18:] == [3, 1]
    rm = RegisterMap(base=100)
    assert (rm.seq_address, rm.key_address, rm.outcome_address) == (100, 102, 118)
    assert (rm.reject_address, rm.ready_address) == (119, 120)
    assert RegisterMap(use_coil_for_ready=True, ready_coil=7).ready_address == 7
    assert OUTCOME_CODES == {
        "ok": 1,
        "defective_front": 2,
        "defective_back": 3,
        "defective_both": 4,
        "incomplete": 5,
    }
    assert all(OUTCOME_NAMES[c] == n for n, c in OUTCOME_CODES.items())


def test_encode_decode_roundtrip() -> None:
    key = "K" * 32
    for name in OUTCOME_CODES:
        part = decode(encode_outcome(0xFFFF_FFFF, key, name, name != "ok"))
        assert (part.seq, part.key, part.outcome, part.reject) == (
            0xFFFF_FFFF,
            key,
            name,
            name != "ok",
        )


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 32"):
        encode_outcome(1, "X" * 33, "ok", False)
    with pytest.raises(ValueError, match="printable ASCII"):
        encode_outcome(1, "pièce-1", "ok", False)
    with pytest.raises(ValueError, match="non-empty"):
        encode_outcome(1, "", "ok", False)
    with pytest.raises(ValueError, match="unknown outcome"):
        encode_outcome(1, "A", "maybe", False)
    with pytest.raises(ValueError, match="seq"):
        encode_outcome(2**32, "A", "ok", False)
    with pytest.raises(ValueError, match="overlaps"):
        RegisterMap(ready_offset=5)
    with pytest.raises(ValueError, match="65535"):
        RegisterMap(base=65530)


def test_key_too_long_is_refused_before_any_io() -> None:
    # Nothing listens on this port: a ValueError (not PlcUnavailable) proves no I/O happened.
    w = PlcWriter.tcp(HOST, free_port())
    with pytest.raises(ValueError, match=r"33 characters.*at most 32.*never truncated"):
        w.write_outcome(1, "P" * 33, "ok", False)
    assert not w.connected


# --------------------------------------------------------------------------- simulated PLC
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


def test_sim_detects_stale_data_and_early_overwrite(plc: SimulatedPlc) -> None:
    """Negative control: the checks above would catch a writer that breaks the handshake."""
    w = writer_for(plc)
    w.write_outcome(1, "A", "ok", False)
    plc.wait_for_parts(1)
    raw = ModbusTcpClient(HOST, port=plc.port, retries=0)
    assert raw.connect()
    try:
        raw.write_register(20, 1, device_id=1)  # flag without new data -> stale part "A"
        plc.wait_for_parts(2)
        plc.hold = True
        w.write_outcome(2, "B", "ok", False)  # correct, but the PLC has not taken it yet
        raw.write_registers(0, encode_outcome(3, "C", "ok", False), device_id=1)  # too early
        raw.write_register(20, 1, device_id=1)  # flag again before the PLC took the part
        plc.hold = False
        assert keys_of(plc.wait_for_parts(3)) == ["A", "A", "C"]  # "B" was overwritten
    finally:
        raw.close()
        w.close()
    s = plc.summary()
    assert s["duplicates"] == {"A": 2}
    assert len(s["violations"]) == 2, s["violations"]
    assert "written while result_ready=1" in s["violations"][0]
    assert "set to 1 while it was still 1" in s["violations"][1]


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


# --------------------------------------------------------------------------- independent server
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


def test_sim_read_by_pymodbustcp_client(plc: SimulatedPlc) -> None:
    """The simulated PLC's registers as seen by an independent client."""
    from pyModbusTCP.client import ModbusClient

    plc.hold = True
    w = writer_for(plc)
    w.write_outcome(0x10002, "ABC", "defective_back", True)
    c = ModbusClient(HOST, plc.port, unit_id=1, auto_open=True, timeout=2)
    try:
        regs = c.read_holding_registers(0, 21)
    finally:
        c.close()
        w.close()
    assert regs is not None
    assert regs[:4] == [1, 2, 0x4142, 0x4300]
    assert regs[18:] == [3, 1, 1]
