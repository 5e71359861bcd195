"""A simulated PLC: a real pymodbus Modbus TCP server plus a small "PLC program".

The server exposes the register map of :mod:`procgraph.agents.modbus.registers`. The PLC
program polls ``result_ready`` every ``poll_interval_s`` (10 ms); when it is 1 it reads the
part (seq, key, outcome, reject), logs one line, records it and clears ``result_ready``,
exactly as the real PLC program is expected to.

It also watches the writer's behaviour: a second part with a key already seen (a duplicate)
is logged at ERROR level, gaps in ``seq`` are counted, and handshake violations (data
registers written while ``result_ready`` is still 1) are recorded in ``violations``.

Register memory survives :meth:`SimulatedPlc.stop` / :meth:`SimulatedPlc.start` on the same
object, like a PLC with retentive memory being power-cycled.

Uses the non-deprecated pymodbus datastore (``SimDevice`` / ``SimData``); addresses outside
the map answer "illegal data address", as a real PLC would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
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
        self._gaps: list[tuple[int, int]] = []
        self._cond = threading.Condition()
        self._server: ModbusTcpServer | None = None
        self._program: asyncio.Task[None] | None = None
        self._internal = False  # True while the PLC program itself accesses the registers
        n = regmap.span_end - regmap.base
        self._memory: list[int] = [0] * n  # retained holding registers base..span_end-1
        self._memory_coil = False
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
        coils = [SimData(address=rm.ready_coil, values=[self._memory_coil], datatype=DataType.BITS)]
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
                regs, coil = await self._read_memory()
                self._memory, self._memory_coil = regs, coil
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
            }

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
        assert self._server is not None
        rm = self.regmap
        self._internal = True
        try:
            if not await self._get_ready():
                return
            regs = await self._server.async_getValues(
                rm.unit_id, _FC_READ_HOLDING, rm.data_address, rm.data_count
            )
            self._take([int(r) for r in regs])
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
    async def _get_ready(self) -> bool:
        assert self._server is not None
        rm = self.regmap
        if rm.use_coil_for_ready:
            bits = await self._server.async_getValues(
                rm.unit_id, _FC_READ_COILS, rm.ready_address, 1
            )
            return bool(bits[0])
        regs = await self._server.async_getValues(rm.unit_id, _FC_READ_HOLDING, rm.ready_address, 1)
        return bool(regs[0])

    async def _read_memory(self) -> tuple[list[int], bool]:
        assert self._server is not None
        rm = self.regmap
        self._internal = True
        try:
            regs = await self._server.async_getValues(
                rm.unit_id, _FC_READ_HOLDING, rm.base, rm.span_end - rm.base
            )
            coil = await self._server.async_getValues(rm.unit_id, _FC_READ_COILS, rm.ready_coil, 1)
        finally:
            self._internal = False
        return [int(r) for r in regs], bool(coil[0])

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
        rm = self.regmap
        is_coil = function_code in (_FC_WRITE_COIL, _FC_WRITE_COILS)
        data_lo, data_hi = rm.data_address, rm.data_address + rm.data_count
        touches_data = not is_coil and address < data_hi and address + count > data_lo
        if rm.use_coil_for_ready:
            sets_ready = is_coil and address <= rm.ready_address < address + count
        else:
            sets_ready = not is_coil and address <= rm.ready_address < address + count
        if not (touches_data or sets_ready):
            return None
        self._internal = True
        try:
            ready = await self._get_ready()
        finally:
            self._internal = False
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
        return None

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


def format_summary(summary: dict[str, Any]) -> str:
    """:meth:`SimulatedPlc.summary` as one line: parts by outcome, rejects, and any
    duplicate keys, seq gaps, handshake violations or invalid writes (named)."""
    outcomes = ", ".join(f"{k} {v}" for k, v in summary["outcomes"].items() if v) or "none"
    text = (f"PLC summary: {summary['parts']} parts ({outcomes}), "
            f"{summary['rejects']} rejects")
    problems = [f"{len(summary[k])} {label}" for k, label in (
        ("duplicates", "duplicate keys"), ("gaps", "seq gaps"),
        ("violations", "handshake violations"), ("invalid", "invalid writes")) if summary[k]]
    text += "; " + ", ".join(problems) if problems else "; no duplicates, gaps or violations"
    if summary["duplicates"]:
        text += f"; DUPLICATES: {summary['duplicates']}"
    return text


def main(
    host: str = "127.0.0.1",
    port: int = 5020,
    summary_every_s: float = 10.0,
    regmap: RegisterMap = DEFAULT_REGISTER_MAP,
) -> None:
    """Run a simulated PLC until Ctrl-C, printing a summary every ``summary_every_s``
    seconds (0 = only at exit) and once on exit. Entry point of ``procgraph plc-sim``."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    plc = SimulatedPlc(host, port, regmap)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await plc.start()
        print(f"simulated PLC on {host}:{port}: {regmap.describe()}. Ctrl-C to stop.", flush=True)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), summary_every_s if summary_every_s > 0 else None
                    )
                if summary_every_s > 0 and not stop.is_set():
                    print(format_summary(plc.summary()), flush=True)
        finally:
            await plc.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        print(format_summary(plc.summary()), flush=True)
