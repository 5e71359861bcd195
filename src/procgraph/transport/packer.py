"""RESP command packing that sends large payloads (camera frames) without copying them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis

#: payloads above this size are sent as separate chunks instead of being copied
_CUTOFF = 512 * 1024
#: packed pieces up to this size are joined into one write (as redis-py does)
_JOIN = 6000

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
            small: list[Any] | None = list(args)
            for i, a in enumerate(args):
                if type(a) is bytes:
                    if len(a) > _CUTOFF:
                        small = None
                        break
                elif isinstance(a, (bytearray, memoryview)):
                    if (a.nbytes if isinstance(a, memoryview) else len(a)) > _CUTOFF:
                        small = None
                        break
                    small[i] = bytes(a)  # type: ignore[index]
            if small is not None:  # small command: hiredis packs it in C
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


_PACKER = _ZeroCopyPacker()


def pack_commands(commands: Iterable[Sequence[Any]]) -> list[bytes | memoryview]:
    """Several commands as the chunks of one pipelined write: small pieces joined into one
    buffer, large payloads kept as they are (what ``Connection.pack_commands`` does, with less
    work per command)."""
    out: list[bytes | memoryview] = []
    small: list[bytes] = []
    for args in commands:
        for chunk in _PACKER.pack(*args):
            if isinstance(chunk, memoryview) or len(chunk) > _JOIN:
                if small:
                    out.append(b"".join(small))
                    small = []
                out.append(chunk)
            else:
                small.append(chunk)
    if small:
        out.append(b"".join(small))
    return out
