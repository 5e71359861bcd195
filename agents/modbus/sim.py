"""A simulated PLC: a real pymodbus Modbus TCP server plus a small "PLC program".

The server exposes the register map of :mod:`procgraph.agents.modbus.registers`. The PLC
program polls ``result_ready`` every ``poll_interval_s`` (10 ms); when it is 1 it reads the
part (seq, key, outcome, reject), logs one line, records it and clears ``result_ready``,
exactly as the real PLC program is expected to. With a mailbox of N slots it takes, each
scan, every slot whose flag is 1, the lowest ``seq`` first (docs/agents/modbus.md); with
``taken_seq`` it writes each part's seq there before clearing the flag.

It also watches the writer's behaviour: a second part with a key already seen (a duplicate)
is logged at ERROR level, gaps in ``seq`` are counted, handshake violations (data
registers written while ``result_ready`` is still 1) are recorded in ``violations``, and
parts whose data was written but never flagged (a writer killed between the two requests:
the documented residual window) are listed in ``unflagged``.

Register memory survives :meth:`SimulatedPlc.stop` / :meth:`SimulatedPlc.start` on the same
object, like a PLC with retentive memory being power-cycled.

Uses the non-deprecated pymodbus datastore (``SimDevice`` / ``SimData``); addresses outside
the map answer "illegal data address", as a real PLC would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from .registers import DEFAULT_REGISTER_MAP, OUTCOME_CODES, RegisterMap

log = logging.getLogger(__name__)

_FC_READ_COILS = 1
_FC_READ_HOLDING = 3
_FC_WRITE_COIL = 5
_FC_WRITE_REGISTER = 6
_FC_WRITE_COILS = 15
_FC_WRITE_REGISTERS = 16
_WRITE_FCS = {_FC_WRITE_COIL, _FC_WRITE_REGISTER, _FC_WRITE_COILS, _FC_WRITE_REGISTERS, 22, 23}


class SimulatedPlc:
    """Simulated PLC on Modbus TCP (see the module docstring).

    Attributes:
        received: parts taken by the PLC program, in order, as dicts with ``seq``, ``key``,
            ``outcome``, ``reject``, ``t`` (time.time()) and ``duplicate`` (bool).
        violations: handshake violations seen (human-readable strings).
        invalid: ready flags raised over undecodable data (strings).
        hold: while True the PLC program does not take parts (result_ready stays 1), to
            simulate a stalled PLC.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5020,
        regmap: RegisterMap = DEFAULT_REGISTER_MAP,
        *,
        poll_interval_s: float = 0.01,
    ) -> None:
        """Configure (does not start) a simulated PLC listening on ``host:port``."""
        self.host = host
        self.port = port
        self.regmap = regmap
        self.poll_interval_s = poll_interval_s
        self.received: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.invalid: list[str] = []
        self.hold = False
        self._seen_keys: Counter[str] = Counter()
        self._dirty: dict[int, bool] = {}  # slot -> data written by a client, not yet flagged
        self._unflagged: list[str] = []  # keys overwritten before they were ever flagged
        self._gaps: list[tuple[int, int]] = []
        self._cond = threading.Condition()
        self._server: ModbusTcpServer | None = None
        self._program: asyncio.Task[None] | None = None
        self._internal = False  # True while the PLC program itself accesses the registers
        n = regmap.span_end - regmap.base
        self._memory: list[int] = [0] * n  # retained holding registers base..span_end-1
        self._memory_coil = [False] * regmap.slots
        self._image: list[int] = list(self._memory)  # the registers as last read
        # thread helper state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the Modbus server and the PLC program in the running event loop.

        Raises:
            OSError: the port cannot be bound (in use; ports below 1024 need root).
        """
        if self._server is not None:
            raise RuntimeError("SimulatedPlc already started")
        rm = self.regmap
        coils = [SimData(address=rm.ready_coil, values=list(self._memory_coil),
                         datatype=DataType.BITS)]
        device = SimDevice(
            id=rm.unit_id,
            simdata=(
                coils,
                [SimData(address=0, values=[False], datatype=DataType.BITS)],
                [SimData(address=rm.base, values=list(self._memory), datatype=DataType.REGISTERS)],
                [SimData(address=0, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._on_access,
        )
        server = ModbusTcpServer(device, address=(self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            await server.shutdown()
            raise OSError(
                f"simulated PLC cannot listen on {self.host}:{self.port} "
                "(port in use? ports below 1024 need root)"
            ) from exc
        self._server = server
        self._program = asyncio.create_task(self._run_program(), name="plc-program")
        log.info("simulated PLC listening on %s:%d (%s)", self.host, self.port, rm.describe())

    async def stop(self) -> None:
        """Stop the PLC program and the server (registers are retained for a later start)."""
        if self._program is not None:
            self._program.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._program
            self._program = None
        if self._server is not None:
            try:
                regs, _ = await self._read_memory()
                coil = await self._server.async_getValues(
                    self.regmap.unit_id, _FC_READ_COILS, self.regmap.ready_coil,
                    self.regmap.slots)
                self._memory, self._memory_coil = regs, [bool(c) for c in coil]
            finally:
                await self._server.shutdown()
                self._server = None
            log.info("simulated PLC on %s:%d stopped", self.host, self.port)

    # ------------------------------------------------------------------ thread helpers
    def start_thread(self, timeout_s: float = 5.0) -> None:
        """Run :meth:`start` in a background thread with its own event loop."""
        if self._thread is not None:
            raise RuntimeError("SimulatedPlc thread already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="plc-sim", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout_s)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
            loop.close()
            raise
        self._loop, self._thread = loop, thread

    def stop_thread(self, timeout_s: float = 5.0) -> None:
        """Stop a PLC started with :meth:`start_thread` / :func:`run_in_thread`."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout_s)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
            loop.close()
            self._loop = self._thread = None

    def wait_for_parts(self, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``count`` parts were received; return a copy of ``received``.

        Raises:
            TimeoutError: fewer parts after ``timeout_s``.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout_s):
                raise TimeoutError(
                    f"simulated PLC received {len(self.received)} parts, expected {count}"
                )
            return list(self.received)

    # ------------------------------------------------------------------ reports
    def summary(self) -> dict[str, Any]:
        """Counts per outcome, rejects, duplicate keys, seq gaps and handshake violations."""
        with self._cond:
            outcomes = dict.fromkeys(OUTCOME_CODES, 0)
            for part in self.received:
                outcomes[part["outcome"]] += 1
            return {
                "parts": len(self.received),
                "outcomes": outcomes,
                "rejects": sum(1 for p in self.received if p["reject"]),
                "duplicates": {k: n for k, n in self._seen_keys.items() if n > 1},
                "gaps": [{"expected": a, "got": b} for a, b in self._gaps],
                "violations": list(self.violations),
                "invalid": list(self.invalid),
                "unflagged": self.unflagged(),
            }

    def unflagged(self) -> list[str]:
        """Keys of parts whose data a client wrote but never flagged: overwritten since, or
        still in a slot with ``result_ready = 0`` (the writer died between the two writes)."""
        with self._cond:
            held = [self._slot_key(i) for i, dirty in self._dirty.items() if dirty]
            return self._unflagged + [k for k in held if k]

    def _slot_key(self, slot: int) -> str:
        """The key in a slot of the retained memory image (the last one read), or ''."""
        rm = self.regmap
        off = slot * rm.slot_stride + 2
        try:
            return rm.decode_key(self._image[off : off + rm.key_registers])
        except ValueError:
            return ""

    # ------------------------------------------------------------------ PLC program
    async def _run_program(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            if self.hold:
                continue
            try:
                await self._scan()
            except Exception:  # the PLC program must keep running
                log.exception("simulated PLC program scan failed")

    async def _scan(self) -> None:
        """One PLC scan: take every slot whose ``result_ready`` is 1, the lowest seq first."""
        assert self._server is not None
        self._internal = True
        try:
            regs, flags = await self._read_memory()
            ready = [i for i, f in enumerate(flags) if f]
            if not ready:
                return
            stride, count = self.regmap.slot_stride, self.regmap.data_count
            blocks = {i: regs[i * stride : i * stride + count] for i in ready}
            last = self.received[-1]["seq"] if self.received else 0
            # oldest first: seq counted on from the last part taken (modulo 2**32)
            for i in sorted(ready, key=lambda i: ((blocks[i][0] << 16 | blocks[i][1]) - last)
                            % (1 << 32)):
                self._take(blocks[i])
                if self.regmap.taken_seq:  # the part's seq, before its flag is cleared
                    await self._server.async_setValues(
                        self.regmap.unit_id, _FC_WRITE_REGISTERS,
                        self.regmap.taken_seq_address, blocks[i][:2])
                rm = self.regmap.slot(i)
                if rm.use_coil_for_ready:
                    await self._server.async_setValues(
                        rm.unit_id, _FC_WRITE_COIL, rm.ready_address, [False]
                    )
                else:
                    await self._server.async_setValues(
                        rm.unit_id, _FC_WRITE_REGISTER, rm.ready_address, [0]
                    )
        finally:
            self._internal = False

    def _take(self, regs: list[int]) -> None:
        try:
            part = self.regmap.decode(regs)
        except ValueError as exc:
            msg = f"result_ready=1 over invalid data: {exc}"
            log.error("PLC %s", msg)
            with self._cond:
                self.invalid.append(msg)
            return
        with self._cond:
            if self.received:
                prev = self.received[-1]["seq"]
                expected = 1 if prev >= 0xFFFF_FFFF else prev + 1
                if part.seq not in (expected, prev):  # same seq again is a duplicate
                    self._gaps.append((expected, part.seq))
                    log.warning("PLC seq gap: expected %d, got %d", expected, part.seq)
            self._seen_keys[part.key] += 1
            duplicate = self._seen_keys[part.key] > 1
            record = {**part.as_dict(), "t": time.time(), "duplicate": duplicate}
            self.received.append(record)
            self._cond.notify_all()
        log.debug(
            "PLC part #%d key=%s outcome=%s reject=%d",
            part.seq,
            part.key,
            part.outcome,
            int(part.reject),
        )
        if duplicate:
            log.error(
                "PLC DUPLICATE PART: key=%s received %d times (seq %d)! The writer delivered "
                "the same part twice.",
                part.key,
                self._seen_keys[part.key],
                part.seq,
            )

    # ------------------------------------------------------------------ register access
    async def _get_ready(self, rm: RegisterMap) -> bool:
        assert self._server is not None
        if rm.use_coil_for_ready:
            bits = await self._server.async_getValues(
                rm.unit_id, _FC_READ_COILS, rm.ready_address, 1
            )
            return bool(bits[0])
        regs = await self._server.async_getValues(rm.unit_id, _FC_READ_HOLDING, rm.ready_address, 1)
        return bool(regs[0])

    async def _read_memory(self) -> tuple[list[int], list[bool]]:
        """The whole register image and every slot's ready flag (also kept in ``_image``)."""
        assert self._server is not None
        rm = self.regmap
        internal, self._internal = self._internal, True
        try:
            regs = await self._server.async_getValues(
                rm.unit_id, _FC_READ_HOLDING, rm.base, rm.span_end - rm.base
            )
            coil = await self._server.async_getValues(
                rm.unit_id, _FC_READ_COILS, rm.ready_coil, rm.slots
            )
        finally:
            self._internal = internal
        image = [int(r) for r in regs]
        self._image = image
        if rm.use_coil_for_ready:
            return image, [bool(c) for c in coil[: rm.slots]]
        off = rm.ready_address - rm.base
        return image, [bool(image[i * rm.slot_stride + off]) for i in range(rm.slots)]

    async def _on_access(
        self,
        function_code: int,
        _start_address: int,
        address: int,
        count: int,
        _current: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Datastore hook, called on every request: records handshake violations."""
        if self._internal or function_code not in _WRITE_FCS or set_values is None:
            return None
        for slot in range(self.regmap.slots):
            await self._check_slot(slot, function_code, address, count, set_values)
        return None

    async def _check_slot(self, slot: int, function_code: int, address: int, count: int,
                          set_values: list[int] | list[bool]) -> None:
        """Record the handshake violations of one client write on one mailbox slot."""
        rm = self.regmap.slot(slot)
        is_coil = function_code in (_FC_WRITE_COIL, _FC_WRITE_COILS)
        data_lo, data_hi = rm.data_address, rm.data_address + rm.data_count
        touches_data = not is_coil and address < data_hi and address + count > data_lo
        if rm.use_coil_for_ready:
            sets_ready = is_coil and address <= rm.ready_address < address + count
        else:
            sets_ready = not is_coil and address <= rm.ready_address < address + count
        if not (touches_data or sets_ready):
            return
        self._internal = True
        try:
            ready = await self._get_ready(rm)
            if touches_data and self._dirty.get(slot):  # the part there was never flagged
                await self._read_memory()
                old = self._slot_key(slot)
                new = self.regmap.decode_key([int(v) for v in set_values[2 : 2 + rm.key_registers]]
                                             ) if address == data_lo and count >= 2 else ""
                if old and old != new:
                    with self._cond:
                        self._unflagged.append(old)
        except ValueError:
            pass
        finally:
            self._internal = False
        if touches_data:
            self._dirty[slot] = True
        if sets_ready and any(set_values):
            self._dirty[slot] = False
        if ready and touches_data:
            self._violation(
                f"data registers {address}..{address + count - 1} written while "
                "result_ready=1 (the PLC had not taken the previous part)"
            )
        if ready and sets_ready and any(set_values):
            self._violation(
                "result_ready set to 1 while it was still 1 (the writer did not wait for the "
                "PLC to take the previous part)"
            )
        if sets_ready and touches_data:
            self._violation("data and result_ready written in the same request")

    def _violation(self, msg: str) -> None:
        log.error("PLC HANDSHAKE VIOLATION: %s", msg)
        with self._cond:
            self.violations.append(msg)


def run_in_thread(
    host: str = "127.0.0.1", port: int = 5020, regmap: RegisterMap = DEFAULT_REGISTER_MAP
) -> SimulatedPlc:
    """Start a :class:`SimulatedPlc` in a background thread; stop it with ``stop_thread()``."""
    plc = SimulatedPlc(host, port, regmap)
    plc.start_thread()
    return plc

