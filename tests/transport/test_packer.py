"""procgraph.transport.packer: the RESP packer matches redis-py's and copies no large frame."""

from __future__ import annotations

import numpy as np
import pytest
import redis
from redis.connection import PythonRespSerializer

from procgraph.transport.packer import _CUTOFF, _ZeroCopyPacker, pack_small

REFERENCE = PythonRespSerializer(6000, redis.connection.Encoder("utf-8", "strict", False).encode)


@pytest.mark.parametrize("args", [
    ("PING",),
    ("XADD", "s", "*", b"h", b'{"v":1}', b"a:x", memoryview(b"\x00\x01\x02")),
    ("SET", "k", 12, "PX", 5000),
    ("XADD", "s", "MAXLEN", "~", 100, "*", b"d", 1.5),
    ("XADD", "s", "*", b"d", memoryview(np.arange(_CUTOFF + 10, dtype=np.uint8))),
    ("XADD", "s", "*", b"d", bytes(_CUTOFF * 3)),
    ("CLIENT SETNAME", "x"),
])
def test_packer_matches_redis_py(args: tuple) -> None:
    ours = b"".join(bytes(c) for c in _ZeroCopyPacker().pack(*args))
    ref = b"".join(bytes(c) for c in REFERENCE.pack(*args))
    assert ours == ref


def test_large_payload_is_not_copied() -> None:
    frame = np.zeros((1024, 1024, 3), np.uint8)
    view = memoryview(frame).cast("B")
    chunks = _ZeroCopyPacker().pack("XADD", "s", "*", b"a:image", view)
    assert any(c is view for c in chunks), "the frame buffer must be sent as it is"


def test_packer_refuses_unknown_types() -> None:
    with pytest.raises(redis.DataError):
        _ZeroCopyPacker().pack("SET", "k", object())


def test_small_commands_packed_at_once_match_redis_py() -> None:
    """pack_small (the reads', the state's and small entries' path) writes what redis-py
    would, for every kind of argument those commands carry, several commands in one buffer."""
    commands = [
        ("EVAL", "return 1", 2, "s", "s:edges", "g", b"1-0", b"2-0"),
        ("XREADGROUP", "GROUP", "g", "g-0", "COUNT", 64, "BLOCK", 500, "STREAMS", "s", ">"),
        ("ZADD", "k", repr(1.0000000000000002), "m", "(2.5"),
        ("XADD", "s", "*", b"h", b'{"v":1}', b"a:x", memoryview(b"\x00\x01\x02"), b"f", 1.5),
    ]
    ref = b"".join(bytes(c) for cmd in commands for c in REFERENCE.pack(*cmd))
    assert pack_small(commands) == ref


def test_small_commands_refuse_what_redis_cannot_carry() -> None:
    with pytest.raises(redis.DataError):
        pack_small([("SET", "k", object())])
