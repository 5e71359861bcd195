"""The simulated PLC: it catches a writer that breaks the handshake, and its registers read
the same from an independent client (pyModbusTCP)."""

from __future__ import annotations

from procgraph.agents.modbus.registers import encode_outcome
from procgraph.agents.modbus.sim import SimulatedPlc
from pymodbus.client import ModbusTcpClient

from pgtest_modbus import HOST, keys_of, writer_for


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
