"""The Modbus register map and its codec, with no I/O."""

from __future__ import annotations

import pytest
from procgraph.agents.modbus.registers import (
    OUTCOME_CODES,
    OUTCOME_NAMES,
    RegisterMap,
    decode,
    encode_outcome,
)


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
