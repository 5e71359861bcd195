"""Recording files: stream entries to a file and back (``procgraph record`` / ``replay``).

The format (version 1, described in docs/cli.md) is plain binary, read without pickle or
``eval``. All integers are big-endian and unsigned::

    file    = magic "PGREC" , version u8 , header_len u32 , header (UTF-8 JSON object)
              , { record } , trailer
    record  = "R" , body_len u32 , body , crc32(body) u32
    body    = ts_ms u64 , stream str16 , entry_id str16 , n_fields u32
              , n_fields * ( name bytes32 , value bytes32 )
    trailer = "E" , n_records u64 , crc32 of every record crc u32
    str16   = len u16 , UTF-8 bytes ;  bytes32 = len u32 , raw bytes

``ts_ms`` is the millisecond part of the entry id (when Redis stored the entry); replay keeps
the gaps between those times. Field names and values are kept byte for byte, in order.
A file that ends without a trailer is reported as truncated.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from procgraph.errors import RecordingError

MAGIC = b"PGREC"
FORMAT_VERSION = 1
#: sanity bounds, far above real entries, so a corrupt length cannot exhaust memory
MAX_HEADER_BYTES = 1 << 20
MAX_RECORD_BYTES = 1 << 31
_U8, _U16, _U32, _U64 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I"), \
    struct.Struct(">Q")
_RECORD, _TRAILER = b"R", b"E"



@dataclass(frozen=True)
class Record:
    """One recorded stream entry: stream key, original entry id, time and fields in order."""

    stream: str
    entry_id: str
    ts_ms: int
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)


def entry_ms(entry_id: str) -> int:
    """The millisecond part of a stream entry id such as ``1718000000000-3``."""
    ms, _, _ = entry_id.partition("-")
    try:
        return int(ms)
    except ValueError:
        raise RecordingError(f"{entry_id!r} is not a stream entry id") from None


def _str16(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise RecordingError(f"name too long to record ({len(raw)} bytes): {text[:40]!r}...")
    return _U16.pack(len(raw)) + raw


def encode_record(record: Record) -> bytes:
    """The bytes of one record (tag, length, body, checksum)."""
    parts = [_U64.pack(record.ts_ms), _str16(record.stream), _str16(record.entry_id),
             _U32.pack(len(record.fields))]
    for name, value in record.fields:
        parts += [_U32.pack(len(name)), name, _U32.pack(len(value)), value]
    body = b"".join(parts)
    return _RECORD + _U32.pack(len(body)) + body + _U32.pack(zlib.crc32(body))


class RecordingWriter:
    """Writes a recording file; use as a context manager so the trailer is written."""

    def __init__(self, path: str | Path, header: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.count = 0
        self.bytes = 0
        self._crc = 0
        meta = {"format": "procgraph-recording", "created": time.time(), **(header or {})}
        text = json.dumps(meta, separators=(",", ":")).encode()
        self._file: IO[bytes] = self.path.open("wb")
        self._file.write(MAGIC + _U8.pack(FORMAT_VERSION) + _U32.pack(len(text)) + text)

    def write(self, record: Record) -> None:
        """Append one entry."""
        data = encode_record(record)
        self._file.write(data)
        self._crc = zlib.crc32(data[-4:], self._crc)
        self.count += 1
        self.bytes += len(data)

    def close(self) -> None:
        """Write the trailer and close the file."""
        if self._file.closed:
            return
        self._file.write(_TRAILER + _U64.pack(self.count) + _U32.pack(self._crc))
        self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingReader:
    """Reads and checks a recording file: ``header`` at once, records by iteration."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file: IO[bytes] = self.path.open("rb")
        except OSError as exc:
            raise RecordingError(f"cannot open recording {self.path}: {exc.strerror}") from exc
        self.size = self.path.stat().st_size
        magic = self._file.read(len(MAGIC))
        if magic != MAGIC:
            self._file.close()
            raise RecordingError(f"{self.path} is not a procgraph recording (bad magic "
                                 f"{magic[:8]!r}; expected {MAGIC!r})")
        version = self._unpack(_U8, "version")
        if version != FORMAT_VERSION:
            self._file.close()
            raise RecordingError(f"{self.path}: recording format version {version} is not "
                                 f"supported (this procgraph reads version {FORMAT_VERSION})")
        length = self._unpack(_U32, "header length")
        if length > MAX_HEADER_BYTES:
            raise RecordingError(f"{self.path}: header length {length} is implausible: corrupt")
        try:
            header = json.loads(self._read(length, "header"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordingError(f"{self.path}: header is not valid JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise RecordingError(f"{self.path}: header must be a JSON object")
        self.header: dict[str, Any] = header

    def _read(self, n: int, what: str) -> bytes:
        data = self._file.read(n)
        if len(data) != n:
            raise RecordingError(f"{self.path} is truncated: it ends inside the {what} at byte "
                                 f"{self._file.tell()} (was the recording interrupted?)")
        return data

    def _unpack(self, st: struct.Struct, what: str) -> int:
        value: int = st.unpack(self._read(st.size, what))[0]
        return value

    def __iter__(self) -> Iterator[Record]:
        count = 0
        crc = 0
        try:
            while True:
                tag = self._file.read(1)
                if tag == _TRAILER:
                    expected, checksum = self._unpack(_U64, "trailer"), self._unpack(_U32,
                                                                                      "trailer")
                    if expected != count or checksum != crc:
                        raise RecordingError(
                            f"{self.path} is corrupt: the trailer names {expected} records, "
                            f"{count} were read (or their checksums differ)")
                    return
                if tag != _RECORD:
                    if not tag:
                        raise RecordingError(
                            f"{self.path} is truncated after {count} records: no end marker "
                            "(was the recording interrupted?)")
                    raise RecordingError(f"{self.path} is corrupt: unknown record tag {tag!r} "
                                         f"at byte {self._file.tell() - 1}")
                length = self._unpack(_U32, f"record {count}")
                if length > MAX_RECORD_BYTES:
                    raise RecordingError(f"{self.path} is corrupt: record {count} claims "
                                         f"{length} bytes")
                if length + 4 > self.size - self._file.tell():
                    raise RecordingError(f"{self.path} is truncated: record {count} claims "
                                         f"{length} bytes but the file ends sooner")
                body = self._read(length, f"record {count}")
                stored = self._read(4, f"record {count}")
                if zlib.crc32(body) != _U32.unpack(stored)[0]:
                    raise RecordingError(f"{self.path} is corrupt: checksum of record {count} "
                                         "does not match")
                crc = zlib.crc32(stored, crc)
                yield _decode_body(body, self.path, count)
                count += 1
        finally:
            self._file.close()

    def position(self) -> int:
        """Bytes read so far (for progress bars)."""
        return self.size if self._file.closed else self._file.tell()

    def close(self) -> None:
        """Close the file (iteration closes it too)."""
        self._file.close()


def _decode_body(body: bytes, path: Path, index: int) -> Record:
    view = memoryview(body)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise RecordingError(f"{path} is corrupt: record {index} is shorter than its fields")
        out = view[pos:pos + n].tobytes()
        pos += n
        return out

    def num(st: struct.Struct) -> int:
        value: int = st.unpack(take(st.size))[0]
        return value

    try:
        ts_ms = num(_U64)
        stream = take(num(_U16)).decode()
        entry_id = take(num(_U16)).decode()
        fields = [(take(num(_U32)), take(num(_U32))) for _ in range(num(_U32))]
    except UnicodeDecodeError as exc:
        raise RecordingError(f"{path} is corrupt: record {index} has a non-UTF-8 name") from exc
    if pos != len(view):
        raise RecordingError(f"{path} is corrupt: record {index} has {len(view) - pos} stray "
                             "bytes")
    return Record(stream, entry_id, ts_ms, fields)


def read_all(path: str | Path) -> tuple[dict[str, Any], list[Record]]:
    """The header and every record of a file (checked to the end)."""
    reader = RecordingReader(path)
    return reader.header, list(reader)


__all__ = ["FORMAT_VERSION", "MAGIC", "Record", "RecordingError", "RecordingReader",
           "RecordingWriter", "entry_ms", "read_all"]
