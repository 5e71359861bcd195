"""Write one outcome per part to a PLC over Modbus, with the ``result_ready`` handshake.

Plain synchronous Python on top of the pymodbus sync clients; no dependency on the procgraph
agent SDK. See ``docs/agents/modbus.md`` for the register map and the handshake as the PLC
programmer sees it.

Delivery rules, in one place:

* A part is written only into a mailbox slot the PLC has emptied (``result_ready == 0``):
  with one slot (the default) that means once the PLC has taken the previous part; with
  ``slots = N`` the parts go round the N slots in turn (slot 0, 1, .., N-1, 0, ..), so the
  writer waits only when the PLC has not yet taken the part written N parts before.
* Data first (one ``write_registers`` request), then ``result_ready = 1``, each checked by
  read-back. pymodbus' own request retries are disabled (``retries=0``): a blind resend of
  ``result_ready = 1`` after the PLC already took the part would make it take the part twice.
* Any I/O failure closes the connection and raises :class:`PlcUnavailable`. The caller retries
  with backoff by calling :meth:`PlcWriter.write_outcome` again with the same arguments.
* Idempotent by key: a key the writer already delivered (it remembers the last
  ``remember_keys`` keys) is not written again, and before writing, the writer reads the PLC's
  registers: if they already hold this exact ``seq`` and ``key`` (the write went through but
  the response was lost), the part counts as delivered. The one case where it then still sets
  ``result_ready`` is when this writer knows it never sent the flag for that part (the
  connection broke between the data write and the flag write).

Residual window, documented for the PLC side: if the *process* dies between the data write
and the flag write, a new process finds the data in the PLC with ``result_ready == 0`` and
cannot tell "never flagged" from "flagged and already taken"; it treats the part as delivered
(no duplicate). The PLC program must therefore reject a part it has no verdict for (fail-safe).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal, TypeVar

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.client.base import ModbusBaseSyncClient
from pymodbus.exceptions import ModbusException

from .link import ModbusRequests, PlcState, PlcUnavailable, newest
from .registers import DEFAULT_REGISTER_MAP, U32_MAX, RegisterMap

__all__ = ["PlcState", "PlcUnavailable", "PlcWriter"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_Stage = Literal["data_sent", "ready_sent"]


class PlcWriter(ModbusRequests):
    """Synchronous Modbus writer of part outcomes (TCP, or RTU over a serial line).

    Build it with :meth:`tcp` or :meth:`rtu`. It is not thread-safe: use one writer per
    PLC from one thread.

    Attributes:
        last_written_seq: ``seq`` of the last part known to be in the PLC (``None`` before
            the first write or connect).
        last_written_key: ``key`` of that part.
    """

    def __init__(
        self,
        client_factory: Callable[[], ModbusBaseSyncClient],
        regmap: RegisterMap = DEFAULT_REGISTER_MAP,
        *,
        endpoint: str,
        what_to_check: str,
        poll_interval_s: float = 0.01,
        remember_keys: int = 1024,
    ) -> None:
        """Low-level constructor; prefer :meth:`tcp` or :meth:`rtu`.

        Args:
            client_factory: returns a new, unconnected pymodbus sync client (``retries=0``).
            regmap: the register map.
            endpoint: human-readable address for messages (``host:port`` or the device).
            what_to_check: hint appended to :class:`PlcUnavailable` messages.
            poll_interval_s: how often ``result_ready`` is polled while waiting.
            remember_keys: how many recently delivered keys are remembered for idempotency.
        """
        self.regmap = regmap
        self.endpoint = endpoint
        self.poll_interval_s = poll_interval_s
        self.last_written_seq: int | None = None
        self.last_written_key: str | None = None
        self._factory = client_factory
        self._what_to_check = what_to_check
        self._client: ModbusBaseSyncClient | None = None
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._remember = max(1, remember_keys)
        # (seq, key, stage, slot) of a part whose write did not complete in this process.
        self._pending: tuple[int, str, _Stage, int] | None = None
        self._slot = 0  # the mailbox slot of the next new part

    # ------------------------------------------------------------------ constructors
    @classmethod
    def tcp(
        cls,
        host: str,
        port: int = 502,
        regmap: RegisterMap = DEFAULT_REGISTER_MAP,
        *,
        request_timeout_s: float = 1.0,
        poll_interval_s: float = 0.01,
    ) -> PlcWriter:
        """Writer for a PLC on Modbus TCP at ``host:port`` (502 is the standard port)."""

        def factory() -> ModbusBaseSyncClient:
            return ModbusTcpClient(host, port=port, timeout=request_timeout_s, retries=0)

        return cls(
            factory,
            regmap,
            endpoint=f"{host}:{port}",
            what_to_check=(
                "check that the PLC is powered and reachable on the network (ping, firewall), "
                f"that its Modbus TCP server listens on port {port}, and that unit id "
                f"{regmap.unit_id} / base address {regmap.base} match the PLC program"
            ),
            poll_interval_s=poll_interval_s,
        )

    @classmethod
    def rtu(
        cls,
        device: str,
        baudrate: int = 19200,
        regmap: RegisterMap = DEFAULT_REGISTER_MAP,
        *,
        parity: Literal["N", "E", "O"] = "E",
        bytesize: int = 8,
        stopbits: int = 1,
        request_timeout_s: float = 1.0,
        poll_interval_s: float = 0.02,
    ) -> PlcWriter:
        """Writer for a PLC on Modbus RTU over a serial line (e.g. ``/dev/ttyUSB0``).

        Needs ``pyserial``. Modbus RTU's default framing is 8E1 (even parity); many devices
        are set to 8N1 instead: match the PLC. The unit id must be the PLC's slave address
        (1-247; 0 is broadcast and gets no response, so it cannot be used here).

        Not tested in this project (no serial hardware here): only the TCP path is covered
        by the test suite. The handshake logic is the same code.
        """
        if regmap.unit_id == 0:
            raise ValueError("RTU needs a unit id 1..247 (0 is broadcast, which gets no reply)")
        if importlib.util.find_spec("serial") is None:
            raise RuntimeError("Modbus RTU needs pyserial: pip install pyserial")

        def factory() -> ModbusBaseSyncClient:
            return ModbusSerialClient(
                device,
                baudrate=baudrate,
                parity=parity,
                bytesize=bytesize,
                stopbits=stopbits,
                timeout=request_timeout_s,
                retries=0,
            )

        return cls(
            factory,
            regmap,
            endpoint=f"{device}@{baudrate},{bytesize}{parity}{stopbits}",
            what_to_check=(
                f"check the cable and that {device} exists and is readable, that baudrate "
                f"{baudrate}, parity {parity}, {bytesize} data bits, {stopbits} stop bit(s) and "
                f"slave address {regmap.unit_id} match the PLC, and that base address "
                f"{regmap.base} matches the PLC program"
            ),
            poll_interval_s=poll_interval_s,
        )

    # ------------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        """True while a connection is open (it may still turn out to be dead)."""
        return self._client is not None

    @property
    def next_seq(self) -> int:
        """The ``seq`` to use for the next new part: last written + 1 (wraps to 1 after
        2**32 - 1), or 1 if nothing is known."""
        if self.last_written_seq is None or self.last_written_seq >= U32_MAX:
            return 1
        return self.last_written_seq + 1

    def delivered_seq(self, key: str) -> int | None:
        """The ``seq`` under which ``key`` was delivered, if this writer remembers it (one of
        the last ``remember_keys`` keys, or the part the PLC held when it connected)."""
        return self._recent.get(key)

    def connect(self) -> None:
        """Open the connection and read the PLC's registers once (every slot).

        The part the PLC holds (the last ``seq`` and ``key`` it was given; with several
        slots, the newest of them) becomes ``last_written_seq`` / ``last_written_key``, the
        keys of every slot become known keys, and the next part goes to the slot after the
        newest one, so :attr:`next_seq`
        continues the PLC's sequence and a redelivered last part is not written again, also
        when the writer has no memory of its own (a new process, its state lost with a
        broker). The writer's own unfinished write is left to the retry.

        Raises:
            PlcUnavailable: cannot connect, or the PLC refuses to read the mapped registers.
        """
        if self._client is None:
            client = self._factory()
            try:
                ok = client.connect()
            except (OSError, ModbusException) as exc:  # serial errors surface as OSError
                client.close()
                raise self._unavailable("cannot connect", exc) from exc
            if not ok:
                client.close()
                raise self._unavailable("cannot connect")
            self._client = client
        states = self.read_slots()
        for other in states:  # every part in the mailbox was delivered, save our own unflagged
            pend = self._pending
            if (other.key and other.key.isascii() and other.key != "\ufffd"
                    and (pend is None or (pend[0], pend[1]) != (other.seq, other.key))):
                self._remember_key(other.key, other.seq)
        state = newest(states)
        self._adopt(state)
        if self.regmap.taken_seq and self._pending is None and not state.ready:
            self._flag_if_never_taken(state)
        log.info(
            "connected to PLC %s (%s); PLC holds seq=%d key=%r ready=%d%s",
            self.endpoint,
            self.regmap.describe(),
            state.seq,
            state.key,
            state.ready,
            f" in slot {state.slot}; next part to slot {self._slot}" if len(states) > 1 else "",
        )

    def _adopt(self, state: PlcState) -> None:
        """Take the part the PLC holds as the last one delivered, unless it is this writer's
        own unfinished write (which :meth:`write_outcome` completes on the retry).

        On a first connect (a new process, or one whose memory is gone with a broker) this
        is what keeps a redelivered last part from being written again and lets ``seq``
        continue the PLC's; on a reconnect it also covers a part written by someone else.
        """
        if not state.key or not state.key.isascii():
            return  # power-up registers (seq 0, no key) or garbage: nothing to adopt
        if (state.seq, state.key) == (self.last_written_seq, self.last_written_key):
            return
        pending = self._pending
        if pending is not None and (pending[0], pending[1]) == (state.seq, state.key):
            return
        if self.last_written_key is not None:
            log.warning("PLC %s holds seq=%d key=%r, not the last part this writer delivered "
                        "(seq=%d key=%r): another writer, or a restored PLC; continuing after "
                        "the PLC's part", self.endpoint, state.seq, state.key,
                        self.last_written_seq, self.last_written_key)
        self.last_written_seq, self.last_written_key = state.seq, state.key
        self._remember_key(state.key, state.seq)
        self._slot = (state.slot + 1) % self.regmap.slots

    def _flag_if_never_taken(self, state: PlcState) -> None:
        """With ``taken_seq``: the newest part, not flagged, that the PLC never took was left
        by a writer that stopped between the data write and the flag: flag it now."""
        if not state.key or state.key == "\ufffd" or not state.key.isascii():
            return
        if self._never_taken(state.seq):
            log.warning("PLC holds seq=%d key=%r in slot %d, never flagged nor taken: a "
                        "writer stopped between the data write and the flag; flagging it now",
                        state.seq, state.key, state.slot)
            self._set_ready(state.seq, state.key, state.slot)
            self._done(state.seq, state.key, state.slot)

    def _never_taken(self, seq: int) -> bool:
        """With ``taken_seq``: True when the PLC's ``taken_seq`` is before ``seq`` (it has
        not taken that part). Without it the writer cannot tell: False."""
        if not self.regmap.taken_seq:
            return False
        hi, lo = self._call("read taken_seq", self._read_registers,
                            self.regmap.taken_seq_address, 2)
        return 0 < (seq - (hi << 16 | lo)) % (U32_MAX + 1) < 1 << 31

    def close(self) -> None:
        """Close the connection (safe to call twice). The writer can connect again later."""
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def __enter__(self) -> PlcWriter:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def read_state(self, slot: int = 0) -> PlcState:
        """Read the data registers and ``result_ready`` of one mailbox slot (connects if
        needed).

        Raises:
            PlcUnavailable: I/O failure or an exception response from the PLC.
        """
        rm = self.regmap.slot(slot)
        regs, ready = self._call("read the data registers and result_ready", self._read_all, rm)
        return self._state(slot, regs, ready)

    def read_slots(self) -> list[PlcState]:
        """Read every mailbox slot (one request for up to 5 slots of the default size)."""
        got = self._call("read the mailbox slots", self._read_slots)
        return [self._state(i, regs, ready) for i, (regs, ready) in enumerate(got)]

    def _state(self, slot: int, regs: list[int], ready: bool) -> PlcState:
        rm = self.regmap
        try:
            key = rm.decode_key(regs[2 : 2 + rm.key_registers])
        except ValueError:
            key = "\ufffd"  # garbage in the PLC: never equal to a valid key
        return PlcState(
            seq=(regs[0] << 16) | regs[1],
            key=key,
            outcome_code=regs[rm.outcome_offset],
            reject=regs[rm.reject_offset],
            ready=ready,
            slot=slot,
        )

    # ------------------------------------------------------------------ writing
    def write_outcome(
        self, seq: int, key: str, outcome: str, reject: bool, timeout_s: float = 5.0
    ) -> None:
        """Deliver one part's outcome to the PLC; returns once the PLC has it.

        "Has it" means: the data registers hold this part and ``result_ready`` was set to 1
        (read back as 1, or already cleared again by the PLC program).

        Args:
            seq: part sequence number (use :attr:`next_seq` for a new part), 0..2**32-1.
            key: part key, printable ASCII, at most ``regmap.key_chars`` characters.
            outcome: a name from :data:`~procgraph.agents.modbus.registers.OUTCOME_CODES`.
            reject: what the PLC should actuate.
            timeout_s: how long to wait in total, mostly for the PLC to clear
                ``result_ready`` of the previous part.

        Raises:
            ValueError: invalid seq/key/outcome (nothing was sent).
            PlcUnavailable: the PLC is unreachable, refused a request, or did not take the
                previous part within ``timeout_s``. Retry later with the same arguments.
        """
        data = self.regmap.encode(seq, key, outcome, reject)  # validate before any I/O
        if key in self._recent:
            if self._recent[key] != seq:
                log.warning(
                    "part key %r already delivered as seq %d; not writing it again as seq %d",
                    key,
                    self._recent[key],
                    seq,
                )
            return
        deadline = time.monotonic() + timeout_s
        pending = self._pending
        slot = pending[3] if pending is not None and pending[:2] == (seq, key) else self._slot
        rm = self.regmap.slot(slot)
        state = self.read_state(slot)
        if state.holds(seq, key):
            if not state.ready and (pending == (seq, key, "data_sent", slot) or (
                    pending == (seq, key, "ready_sent", slot) and self._never_taken(seq))):
                log.info("PLC holds seq=%d key=%r but was never flagged; flagging", seq, key)
                self._set_ready(seq, key, slot)
            else:
                log.info(
                    "PLC already holds seq=%d key=%r (earlier write went through); not rewriting",
                    seq,
                    key,
                )
            self._done(seq, key, slot)
            return
        # The PLC must have taken the previous part before its data registers are overwritten.
        while state.ready:
            if time.monotonic() >= deadline:
                raise PlcUnavailable(
                    f"PLC at {self.endpoint} did not clear result_ready "
                    f"({self._ready_name(rm)}) within {timeout_s:g} s; the previous part "
                    f"(seq={state.seq} key={state.key!r}) is still waiting to be taken. Check "
                    "that the PLC program is running and clears result_ready after reading."
                )
            time.sleep(self.poll_interval_s)
            state = self.read_state(slot)
        self._pending = (seq, key, "data_sent", slot)
        self._call("write the data registers", self._write_registers, rm.data_address, data)
        back = self._call(
            "read back the data registers", self._read_registers, rm.data_address, len(data)
        )
        if back != data:
            self.close()
            raise PlcUnavailable(
                f"PLC at {self.endpoint} did not keep the data written to holding registers "
                f"{rm.data_address}..{rm.data_address + len(data) - 1} (read back differs); "
                "check that nothing else writes there and that the base address is right"
            )
        self._set_ready(seq, key, slot)
        self._done(seq, key, slot)

    # ------------------------------------------------------------------ internals
    def _set_ready(self, seq: int, key: str, slot: int) -> None:
        self._pending = (seq, key, "ready_sent", slot)
        self._call("set result_ready", self._write_ready, self.regmap.slot(slot))
        state = self.read_state(slot)
        # ready == 1: waiting for the PLC; ready == 0 with our data: the PLC already took it.
        if not state.holds(seq, key):
            self.close()
            raise PlcUnavailable(
                f"PLC at {self.endpoint}: after setting result_ready the data registers hold "
                f"seq={state.seq} key={state.key!r}, not seq={seq} key={key!r}; "
                "is another writer using the same registers?"
            )

    def _done(self, seq: int, key: str, slot: int) -> None:
        self._pending = None
        self._slot = (slot + 1) % self.regmap.slots
        self.last_written_seq, self.last_written_key = seq, key
        self._remember_key(key, seq)

    def _remember_key(self, key: str, seq: int) -> None:
        self._recent[key] = seq
        self._recent.move_to_end(key)
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)

    def _call(self, what: str, fn: Callable[..., _T], *args: object) -> _T:
        """Run one request; on any failure drop the connection and raise PlcUnavailable."""
        if self._client is None:
            self.connect()
        try:
            return fn(*args)
        except PlcUnavailable:
            self.close()
            raise
        except (ModbusException, OSError, ValueError) as exc:
            self.close()
            raise self._unavailable(f"failed to {what}", exc) from exc

    def __repr__(self) -> str:
        return f"PlcWriter({self.endpoint!r}, {self.regmap!r})"
