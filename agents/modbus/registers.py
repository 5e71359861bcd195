"""The documented Modbus register map between the inspection line and the PLC.

One part outcome is a block of holding registers plus a ``result_ready`` handshake flag.
Addresses are 0-based protocol addresses (what goes on the wire), counted from ``base``:

====================  ======  ====  =====================================================
offset                type    regs  meaning
====================  ======  ====  =====================================================
base + 0 .. 1         u32     2     ``seq``: part sequence counter, +1 per part written
base + 2 .. 17        ASCII   16    ``key``: part key, 2 chars per register, NUL padded
base + 18             u16     1     ``outcome``: see :data:`OUTCOME_CODES`
base + 19             u16     1     ``reject``: 0 = pass, 1 = reject (what the PLC actuates)
base + 20             u16     1     ``result_ready``: 1 = new part written, PLC clears to 0
====================  ======  ====  =====================================================

Word and byte order: Modbus big-endian. A u32 is two registers, the HIGH word first
(``seq = reg[0] << 16 | reg[1]``). In the key, each register holds two characters, the
first character in the HIGH byte (``reg = ord(c0) << 8 | ord(c1)``); unused characters are
0 (NUL). The ready flag can live in a coil instead (``use_coil_for_ready=True``), and its
holding-register offset can be moved with ``ready_offset``.

The mailbox can have ``slots`` such blocks (default 1, the layout above): slot ``i`` is the
same block ``i * slot_stride`` registers further on (21 with the defaults; its ready coil, if
coils are used, is ``ready_coil + i``), see ``docs/agents/modbus.md`` ("Mailbox of N slots").

The ``key_registers`` count (default 16 = 32 characters) is a parameter; a key longer than
``2 * key_registers`` characters is refused with :class:`ValueError`, never truncated:
two parts whose keys share the first 32 characters would otherwise look identical to the
PLC and to the writer's duplicate check.

This module has no I/O and no dependency on pymodbus: it is shared by the writer
(:mod:`procgraph.agents.modbus.client`), the simulated PLC and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

#: Outcome name -> code written to the ``outcome`` register.
OUTCOME_CODES: dict[str, int] = {
    "ok": 1,
    "defective_front": 2,
    "defective_back": 3,
    "defective_both": 4,
    "incomplete": 5,
}
#: Outcome code -> name (the reverse of :data:`OUTCOME_CODES`).
OUTCOME_NAMES: dict[int, str] = {code: name for name, code in OUTCOME_CODES.items()}

#: Offsets (from ``base``) of the data registers; the layout is fixed.
SEQ_OFFSET = 0
SEQ_REGISTERS = 2
KEY_OFFSET = 2
DEFAULT_KEY_REGISTERS = 16

U32_MAX = 0xFFFF_FFFF
#: Most mailbox slots a map may have.
MAX_SLOTS = 64


def outcome_code(outcome: str | int) -> int:
    """Return the register code of an outcome given by name (``"ok"``) or code (``1``)."""
    if isinstance(outcome, bool):
        raise ValueError(f"outcome must be a name or a code, not {outcome!r}")
    if isinstance(outcome, int):
        if outcome not in OUTCOME_NAMES:
            raise ValueError(f"unknown outcome code {outcome}; known: {OUTCOME_NAMES}")
        return outcome
    try:
        return OUTCOME_CODES[outcome]
    except KeyError:
        raise ValueError(
            f"unknown outcome {outcome!r}; known: {', '.join(OUTCOME_CODES)}"
        ) from None


def default_reject(outcome: str | int) -> bool:
    """The usual reject decision for an outcome: everything but ``ok`` is rejected."""
    return outcome_code(outcome) != OUTCOME_CODES["ok"]


@dataclass(frozen=True)
class PartRecord:
    """One decoded part outcome as held in the PLC's data registers."""

    seq: int
    key: str
    outcome: str
    reject: bool

    def as_dict(self) -> dict[str, object]:
        """Plain dict (for logs, JSON and the simulated PLC's ``received`` list)."""
        return asdict(self)


@dataclass(frozen=True)
class RegisterMap:
    """Where the part outcome lives in the PLC (all fields have defaults and can be overridden).

    Args:
        unit_id: Modbus unit/device id (1-247; many TCP PLCs ignore it, gateways do not).
        base: 0-based holding-register address of ``seq`` (the first register of the block).
            A PLC manual quoting "40001" usually means 0-based address 0.
        key_registers: registers reserved for the key (2 ASCII characters each).
        use_coil_for_ready: put ``result_ready`` in a coil instead of a holding register.
        ready_coil: 0-based coil address of the ready flag when ``use_coil_for_ready``.
        ready_offset: holding-register offset of ``result_ready`` from ``base``; ``None`` means
            right after the data block (offset 20 with the default key size).
        slots: mailbox slots (1..64): that many copies of the block, back to back, each with
            its own ``result_ready``. 1 (the default) is the single-slot handshake.
        taken_seq: the PLC also writes the ``seq`` of each part it takes into a u32 right
            after the last slot (``taken_seq_address``), so that a writer that died between
            the data write and the flag can tell "never flagged" from "taken". Off by default.
    """

    unit_id: int = 1
    base: int = 0
    key_registers: int = DEFAULT_KEY_REGISTERS
    use_coil_for_ready: bool = False
    ready_coil: int = 0
    ready_offset: int | None = None
    slots: int = 1
    taken_seq: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= MAX_SLOTS:
            raise ValueError(f"slots must be 1..{MAX_SLOTS}, got {self.slots}")
        if not 0 <= self.unit_id <= 255:
            raise ValueError(f"unit_id must be 0..255, got {self.unit_id}")
        if not 1 <= self.key_registers <= 100:
            raise ValueError(f"key_registers must be 1..100, got {self.key_registers}")
        if self.base < 0:
            raise ValueError(f"base must be >= 0, got {self.base}")
        if self.ready_offset is not None and (
            self.ready_offset < 0 or SEQ_OFFSET <= self.ready_offset < self.data_count
        ):
            raise ValueError(
                f"ready_offset {self.ready_offset} overlaps the data registers "
                f"(offsets 0..{self.data_count - 1})"
            )
        if not 0 <= self.ready_coil <= 0x10000 - self.slots:
            raise ValueError(f"ready_coil must be 0..{0x10000 - self.slots} with {self.slots} "
                             f"slot(s), got {self.ready_coil}")
        if self.span_end > 0x10000:
            raise ValueError(f"register map does not fit below address 65535 (base={self.base})")

    # ----- layout -----
    @property
    def key_chars(self) -> int:
        """Maximum key length in characters."""
        return 2 * self.key_registers

    @property
    def outcome_offset(self) -> int:
        """Offset of the ``outcome`` register from ``base``."""
        return KEY_OFFSET + self.key_registers

    @property
    def reject_offset(self) -> int:
        """Offset of the ``reject`` register from ``base``."""
        return self.outcome_offset + 1

    @property
    def data_count(self) -> int:
        """Number of data registers (seq, key, outcome, reject), written in one request."""
        return self.reject_offset + 1

    @property
    def data_address(self) -> int:
        """Address of the first data register (``seq`` high word)."""
        return self.base

    @property
    def seq_address(self) -> int:
        """Address of ``seq`` (high word; low word at +1)."""
        return self.base + SEQ_OFFSET

    @property
    def key_address(self) -> int:
        """Address of the first key register."""
        return self.base + KEY_OFFSET

    @property
    def outcome_address(self) -> int:
        """Address of the ``outcome`` register."""
        return self.base + self.outcome_offset

    @property
    def reject_address(self) -> int:
        """Address of the ``reject`` register."""
        return self.base + self.reject_offset

    @property
    def ready_address(self) -> int:
        """Address of ``result_ready``: a coil address if ``use_coil_for_ready``, else a
        holding-register address."""
        if self.use_coil_for_ready:
            return self.ready_coil
        offset = self.data_count if self.ready_offset is None else self.ready_offset
        return self.base + offset

    @property
    def ready_contiguous(self) -> bool:
        """True when ``result_ready`` is the holding register right after the data block,
        so data and flag can be read in one request."""
        return (not self.use_coil_for_ready) and self.ready_address == self.base + self.data_count

    @property
    def slot_stride(self) -> int:
        """Holding registers one slot takes (the data block, and ``result_ready`` unless it
        is a coil): slot ``i`` starts at ``base + i * slot_stride``."""
        span = self.data_count
        if not self.use_coil_for_ready:
            offset = self.data_count if self.ready_offset is None else self.ready_offset
            span = max(span, offset + 1)
        return span

    @property
    def span_end(self) -> int:
        """One past the highest holding-register address used by the map (all slots, and
        ``taken_seq`` when the PLC writes it)."""
        return self.taken_seq_address + (2 if self.taken_seq else 0)

    @property
    def taken_seq_address(self) -> int:
        """Address of ``taken_seq`` (high word; low word at +1): right after the last slot."""
        return self.base + self.slots * self.slot_stride

    def slot(self, index: int) -> RegisterMap:
        """The single-slot map of mailbox slot ``index`` (0-based): the same layout moved
        ``index * slot_stride`` registers on (and ``index`` coils on, for a ready coil)."""
        if not 0 <= index < self.slots:
            raise ValueError(f"slot must be 0..{self.slots - 1}, got {index}")
        if self.slots == 1 and not self.taken_seq:
            return self
        return replace(self, base=self.base + index * self.slot_stride,
                       ready_coil=self.ready_coil + index, slots=1, taken_seq=False)

    # ----- codec -----
    def encode_key(self, key: str) -> list[int]:
        """Key -> ``key_registers`` register values (ASCII, high byte first, NUL padded).

        Raises:
            ValueError: empty key, non-printable-ASCII characters, or longer than ``key_chars``.
        """
        if not isinstance(key, str) or not key:
            raise ValueError(f"part key must be a non-empty string, got {key!r}")
        if len(key) > self.key_chars:
            raise ValueError(
                f"part key {key!r} is {len(key)} characters; the register map holds at most "
                f"{self.key_chars} ({self.key_registers} registers). Keys are never truncated: "
                "use shorter part keys or a larger key_registers (and PLC buffer)."
            )
        if any(not 0x20 <= ord(c) <= 0x7E for c in key):
            raise ValueError(f"part key {key!r} must be printable ASCII (0x20-0x7E)")
        raw = key.encode("ascii").ljust(self.key_chars, b"\x00")
        return [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]

    def decode_key(self, registers: Sequence[int]) -> str:
        """Register values -> key (trailing NULs stripped).

        Raises:
            ValueError: wrong register count or a non-ASCII byte.
        """
        if len(registers) != self.key_registers:
            raise ValueError(f"expected {self.key_registers} key registers, got {len(registers)}")
        raw = b"".join(int(r).to_bytes(2, "big") for r in registers).rstrip(b"\x00")
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ValueError(f"key registers hold non-ASCII bytes: {raw!r}") from exc

    def encode(self, seq: int, key: str, outcome: str | int, reject: bool) -> list[int]:
        """Part outcome -> the ``data_count`` register values written at ``data_address``.

        ``result_ready`` is not part of the block: it is written separately, afterwards.
        """
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= U32_MAX:
            raise ValueError(f"seq must be an integer 0..{U32_MAX}, got {seq!r}")
        code = outcome_code(outcome)
        regs = [(seq >> 16) & 0xFFFF, seq & 0xFFFF]
        regs += self.encode_key(key)
        regs += [code, 1 if reject else 0]
        return regs

    def decode(self, registers: Sequence[int]) -> PartRecord:
        """The ``data_count`` register values at ``data_address`` -> :class:`PartRecord`.

        Raises:
            ValueError: wrong length, unknown outcome code, reject not 0/1 or a bad key.
        """
        if len(registers) != self.data_count:
            raise ValueError(f"expected {self.data_count} registers, got {len(registers)}")
        seq = (int(registers[0]) << 16) | int(registers[1])
        key = self.decode_key(registers[KEY_OFFSET : KEY_OFFSET + self.key_registers])
        code = int(registers[self.outcome_offset])
        if code not in OUTCOME_NAMES:
            raise ValueError(f"unknown outcome code {code} for seq {seq} key {key!r}")
        reject = int(registers[self.reject_offset])
        if reject not in (0, 1):
            raise ValueError(f"reject register must be 0 or 1, got {reject}")
        return PartRecord(seq=seq, key=key, outcome=OUTCOME_NAMES[code], reject=bool(reject))

    def describe(self) -> str:
        """One-line human description of the map (for logs and error messages)."""
        ready = (
            f"coil {self.ready_address}"
            if self.use_coil_for_ready
            else f"holding register {self.ready_address}"
        )
        if self.slots > 1:
            return (
                f"unit {self.unit_id}, {self.slots} slots of {self.slot_stride} holding "
                f"registers from {self.base} (slot 0: seq, key, outcome, reject at "
                f"{self.base}..{self.base + self.data_count - 1}, result_ready at {ready}; "
                f"slot i {self.slot_stride}*i further on)"
            )
        return (
            f"unit {self.unit_id}, holding registers {self.base}..{self.base + self.data_count - 1}"
            f" (seq, key, outcome, reject), result_ready at {ready}"
        )


DEFAULT_REGISTER_MAP = RegisterMap()


def encode_outcome(
    seq: int,
    key: str,
    outcome: str | int,
    reject: bool,
    regmap: RegisterMap = DEFAULT_REGISTER_MAP,
) -> list[int]:
    """Register values of one part outcome (the data block, without ``result_ready``)."""
    return regmap.encode(seq, key, outcome, reject)


def decode(registers: Sequence[int], regmap: RegisterMap = DEFAULT_REGISTER_MAP) -> PartRecord:
    """Reverse of :func:`encode_outcome`."""
    return regmap.decode(registers)
