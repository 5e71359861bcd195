"""The Modbus requests the PLC writer makes, each failure turned into :class:`PlcUnavailable`.

The handshake and the delivery rules are in :mod:`procgraph.agents.modbus.client`; this module
only reads and writes the mapped registers (and the ``result_ready`` coil) over a pymodbus
sync client, explains the PLC's exception responses, and names what the PLC holds
(:class:`PlcState`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pymodbus.client.base import ModbusBaseSyncClient
from pymodbus.pdu import ModbusPDU

from .registers import U32_MAX, RegisterMap

#: Modbus exception codes -> what they usually mean for this writer.
_EXCEPTION_HINTS: dict[int, str] = {
    1: "illegal function (the PLC does not support this request; coil vs register?)",
    2: "illegal data address (check the base address, the number of mailbox slots and that "
    "the PLC maps all registers)",
    3: "illegal data value",
    4: "device failure (some servers, the simulated PLC among them, answer this for an "
    "unknown unit id: check unit_id)",
    6: "device busy (retry later)",
    10: "gateway path unavailable (check unit_id behind the gateway)",
    11: "gateway target did not respond (check unit_id and the serial side of the gateway)",
}


@dataclass(frozen=True)
class PlcState:
    """What the PLC currently holds in the mapped registers."""

    seq: int
    key: str
    outcome_code: int
    reject: int
    ready: bool
    slot: int = 0

    def holds(self, seq: int, key: str) -> bool:
        """True if the PLC's data registers hold exactly this part."""
        return self.seq == seq and self.key == key


def newest(states: list[PlcState]) -> PlcState:
    """The slot holding the part written last: the highest ``seq``, counted modulo 2**32
    so that 1 comes after 4294967295; slots without a key (power-up) only if all are."""
    live = [s for s in states if s.key and s.key != "\ufffd"] or states
    best = live[0]
    for s in live[1:]:
        if 0 < (s.seq - best.seq) % (U32_MAX + 1) < 1 << 31:
            best = s
    return best


class PlcUnavailable(Exception):
    """The PLC could not be reached, refused a request, or did not clear ``result_ready``
    in time. Nothing is known to be lost: retry :meth:`PlcWriter.write_outcome` later with the
    same arguments (with backoff); the writer will not write the part twice."""


class ModbusRequests:
    """Register requests on ``self._client`` for a :class:`~.client.PlcWriter` (a mixin).

    The class using it sets ``_client`` (an open pymodbus sync client, or None), ``regmap``,
    ``endpoint`` and ``_what_to_check``. The slot requests take the single-slot map of one
    mailbox slot (``regmap.slot(i)``).
    """

    _client: ModbusBaseSyncClient | None
    regmap: RegisterMap
    endpoint: str
    _what_to_check: str

    def _ready_name(self, rm: RegisterMap | None = None) -> str:
        rm = rm or self.regmap
        kind = "coil" if rm.use_coil_for_ready else "holding register"
        return f"{kind} {rm.ready_address}"

    def _unavailable(self, what: str, exc: BaseException | None = None) -> PlcUnavailable:
        detail = f": {exc}" if exc is not None else ""
        return PlcUnavailable(
            f"PLC at {self.endpoint} unavailable ({what}{detail}); {self._what_to_check}"
        )

    def _check(self, response: ModbusPDU, what: str) -> ModbusPDU:
        if response.isError():
            code = getattr(response, "exception_code", 0)
            hint = _EXCEPTION_HINTS.get(code, "unknown exception code")
            raise self._unavailable(f"PLC refused to {what}: exception code {code}, {hint}")
        return response

    def _read_registers(self, address: int, count: int) -> list[int]:
        assert self._client is not None
        rsp = self._client.read_holding_registers(
            address, count=count, device_id=self.regmap.unit_id
        )
        regs = list(self._check(rsp, f"read holding registers {address}+{count}").registers)
        if len(regs) != count:
            raise ValueError(f"asked for {count} registers, got {len(regs)}")
        return regs

    def _write_registers(self, address: int, values: list[int]) -> list[int]:
        assert self._client is not None
        rsp = self._client.write_registers(address, values, device_id=self.regmap.unit_id)
        self._check(rsp, f"write holding registers {address}+{len(values)}")
        return values

    def _read_all(self, rm: RegisterMap) -> tuple[list[int], bool]:
        if rm.ready_contiguous:
            regs = self._read_registers(rm.data_address, rm.data_count + 1)
            return regs[:-1], bool(regs[-1])
        return self._read_registers(rm.data_address, rm.data_count), self._read_ready(rm)

    def _read_ready(self, rm: RegisterMap) -> bool:
        assert self._client is not None
        if rm.use_coil_for_ready:
            rsp = self._client.read_coils(rm.ready_address, count=1, device_id=rm.unit_id)
            return bool(self._check(rsp, f"read coil {rm.ready_address}").bits[0])
        return bool(self._read_registers(rm.ready_address, 1)[0])

    def _read_slots(self) -> list[tuple[list[int], bool]]:
        """Data and ready flag of every mailbox slot, in as few requests as fit (125 registers
        a request; the ready coils in one more)."""
        rm = self.regmap
        if rm.slots == 1:
            return [self._read_all(rm)]
        stride, per = rm.slot_stride, max(1, 125 // rm.slot_stride)
        regs: list[int] = []
        for first in range(0, rm.slots, per):
            n = min(per, rm.slots - first)
            regs += self._read_registers(rm.base + first * stride, n * stride)
        if rm.use_coil_for_ready:
            assert self._client is not None
            rsp = self._client.read_coils(rm.ready_coil, count=rm.slots, device_id=rm.unit_id)
            bits = list(self._check(rsp, f"read coils {rm.ready_coil}+{rm.slots}").bits)
            flags = [bool(b) for b in bits[: rm.slots]]
        else:
            off = rm.ready_address - rm.base
            flags = [bool(regs[i * stride + off]) for i in range(rm.slots)]
        return [(regs[i * stride : i * stride + rm.data_count], flags[i])
                for i in range(rm.slots)]

    def _write_ready(self, rm: RegisterMap) -> list[int]:
        assert self._client is not None
        if rm.use_coil_for_ready:
            rsp = self._client.write_coil(rm.ready_address, True, device_id=rm.unit_id)
        else:
            rsp = self._client.write_register(rm.ready_address, 1, device_id=rm.unit_id)
        self._check(rsp, f"set result_ready ({self._ready_name(rm)})")
        return [1]
