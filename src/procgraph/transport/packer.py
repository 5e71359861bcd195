"""RESP command packing that sends large payloads (camera frames) without copying them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

#: payloads above this size are sent as separate chunks instead of being copied
_CUTOFF = 512 * 1024

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency, but stay usable without
    _hiredis_pack = None  # type: ignore[assignment]


class _ZeroCopyPacker:
    """RESP command packer that sends large payloads as they are, without copying.

    redis-py's hiredis packer copies every argument into one buffer (about 9 ms for a
    5 MB frame here); this one keeps big buffers and memoryviews as separate chunks.
    """

    def pack(self, *args: Any) -> list[bytes | memoryview]:
        """The command as a list of chunks to write to the socket in order."""
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        if _hiredis_pack is not None:
            small = list(args)
            for i, a in enumerate(args):
                if isinstance(a, (bytes, bytearray, memoryview)):
                    if (a.nbytes if isinstance(a, memoryview) else len(a)) > _CUTOFF:
                        break  # sent as chunks, below
                    if type(a) is not bytes:
                        small[i] = bytes(a)
            else:  # small command: hiredis packs it in C
                try:
                    return [_hiredis_pack(tuple(small))]
                except TypeError as exc:
                    raise redis.DataError(str(exc)) from exc
        out: list[bytes | memoryview] = []
        buf = bytearray(b"*%d\r\n" % len(args))
        for arg in args:
            if isinstance(arg, memoryview):
                data: bytes | memoryview = arg if arg.format == "B" else arg.cast("B")
            elif isinstance(arg, (bytes, bytearray)):
                data = arg  # type: ignore[assignment]  # a bytearray is sent as it is, too
            elif isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
                data = repr(arg).encode()
            else:
                raise redis.DataError(f"cannot send {type(arg).__name__} to Redis")
            size = len(data) if not isinstance(data, memoryview) else data.nbytes
            buf += b"$%d\r\n" % size
            if size > _CUTOFF:
                out.append(bytes(buf))
                out.append(data)
                buf = bytearray(b"\r\n")
            else:
                buf += data
                buf += b"\r\n"
        out.append(bytes(buf))
        return out


def pack_small(commands: Sequence[Sequence[Any]]) -> bytes:
    """Several commands of small arguments (names, ids, numbers, short values) as one
    buffer, packed in C: what the zero-copy packer would send for them, without its
    per-argument checks in Python."""
    if _hiredis_pack is None:  # pragma: no cover - hiredis is a dependency
        packer = _ZeroCopyPacker()
        return b"".join(bytes(chunk) for c in commands for chunk in packer.pack(*c))
    try:
        return b"".join([_hiredis_pack(tuple(c)) for c in commands])
    except TypeError as exc:
        raise redis.DataError(str(exc)) from exc
