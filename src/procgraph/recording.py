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
import logging
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import redis

from procgraph.constants import HEADER_FIELD
from procgraph.errors import (
    TRANSIENT_ERRORS,
    BrokerUnavailable,
    RecordingError,
    broker_unavailable_as,
)
from procgraph.safetext import printable

if TYPE_CHECKING:
    from procgraph.graph import GraphPlan

log = logging.getLogger("procgraph.recording")

MAGIC = b"PGREC"
FORMAT_VERSION = 1
#: sanity bounds, far above real entries, so a corrupt length cannot exhaust memory
MAX_HEADER_BYTES = 1 << 20
MAX_RECORD_BYTES = 1 << 31
_U8, _U16, _U32, _U64 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I"), \
    struct.Struct(">Q")
_RECORD, _TRAILER = b"R", b"E"
#: entries read per XREAD while recording, and XADDs per pipeline while replaying
READ_COUNT = 200
PIPELINE_MAX = 200


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
        try:
            self.header: dict[str, Any] = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def _read_header(self) -> dict[str, Any]:
        magic = self._file.read(len(MAGIC))
        if magic != MAGIC:
            raise RecordingError(f"{self.path} is not a procgraph recording (bad magic "
                                 f"{magic[:8]!r}; expected {MAGIC!r})")
        version = self._unpack(_U8, "version")
        if version != FORMAT_VERSION:
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
        return header

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


# -- recording live streams, replaying a file -----------------------------------------------
def graph_streams(plan: GraphPlan, urls: Mapping[str, str]) -> dict[str, list[str]]:
    """Broker URL -> the output streams of every agent of ``plan`` on that broker."""
    by_url: dict[str, list[str]] = {}
    for agent in plan.agents.values():
        for out in agent.outputs:
            by_url.setdefault(urls[out.broker], []).append(out.stream)
    return {url: list(dict.fromkeys(keys)) for url, keys in by_url.items()}


class Recorder:
    """Reads new entries of streams on one or more brokers, read-only (plain XREAD, no group).

    ``by_url`` maps a broker URL to the stream keys to record there. It starts after the
    newest entry of each stream now (so no entry falls between), or at the first with
    ``from_start``. Raises BrokerUnavailable when a broker cannot be reached.
    """

    def __init__(self, by_url: Mapping[str, list[str]], from_start: bool = False) -> None:
        self.clients = {url: redis.Redis.from_url(url, socket_connect_timeout=1.0,
                                                  socket_timeout=5.0) for url in by_url}
        self.streams = [s for keys in by_url.values() for s in keys]
        self._block_ms = 200 if len(self.clients) == 1 else 50
        self._last: dict[str, dict[str, str]] = {}
        #: entries recorded with a shared-memory reference that could not be read here
        self.unresolved = 0
        self._said: set[str] = set()
        try:
            for url, keys in by_url.items():
                with broker_unavailable_as(f"read streams on {url}"):
                    self._last[url] = self._start_ids(self.clients[url], keys, from_start)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _start_ids(client: redis.Redis, keys: list[str], from_start: bool) -> dict[str, str]:
        ids: dict[str, str] = {}
        for key in keys:
            newest: Any = [] if from_start else client.xrevrange(key, count=1)
            ids[key] = newest[0][0].decode() if newest else "0-0"
        return ids

    def read_into(self, writer: RecordingWriter, limit: int | None = None,
                  wait_s: float | None = None) -> int:
        """One round: write the entries that arrived (waiting up to ``wait_s``) to ``writer``.

        Stops at ``limit`` entries in the file; returns how many were written this round.
        """
        block = self._block_ms if wait_s is None else max(1, min(self._block_ms,
                                                                 int(wait_s * 1000)))
        before = writer.count
        for url, client in self.clients.items():
            with broker_unavailable_as(f"read streams on {url}"):
                last: Any = self._last[url]
                reply: Any = client.xread(last, count=READ_COUNT, block=block)
            for stream, entries in reply or []:
                key = stream.decode()
                for entry_id, fields in entries:
                    if limit is not None and writer.count >= limit:
                        break
                    eid = entry_id.decode()
                    fields = self._resolved(key, eid, fields)
                    writer.write(Record(key, eid, entry_ms(eid), list(fields.items())))
                    self._last[url][key] = eid
        return writer.count - before

    def _resolved(self, stream: str, entry_id: str, fields: dict[bytes, bytes]
                  ) -> dict[bytes, bytes]:
        """The entry with frames sent through shared memory put back inline (the file keeps
        the pixels); as it is, said once per stream, when they cannot be read here."""
        from procgraph.delivery.shmreader import inline_refs

        inline, problem = inline_refs(fields)
        if problem is not None:
            self.unresolved += 1
            if stream not in self._said:
                self._said.add(stream)
                log.warning("%s: entry %s recorded without its pixels: %s (record on the "
                            "producer's host, or set shm: false on that output)",
                            printable(stream, 200), entry_id, problem)
        return inline

    def close(self) -> None:
        """Close the broker connections."""
        for client in self.clients.values():
            client.close()


def check_file(path: str | Path) -> RecordingReader:
    """Read a whole recording to check it, then return a fresh reader at its first record."""
    for _ in RecordingReader(path):
        pass
    return RecordingReader(path)


def _xadd_args(key: str, rec: Record, maxlen: int | None) -> list[bytes | str | int]:
    args: list[bytes | str | int] = ["XADD", key]
    if maxlen:
        args += ["MAXLEN", "~", maxlen]
    args.append("*")
    for name, value in rec.fields:  # a flat list keeps order (and repeated names)
        args += [name, value]
    return args


def replay(reader: RecordingReader, client: redis.Redis, *, speed: float = 1.0,
           fast: bool = False, stream_prefix: str = "", maxlen: int | None = None,
           ) -> Iterator[int]:
    """Write the recorded entries back with XADD, keeping their gaps (divided by ``speed``).

    A generator: it yields how many entries it wrote each time it flushed them to the
    broker (for progress), ending with the total. ``fast`` ignores the timing;
    ``stream_prefix`` is put in front of each recorded key; ``maxlen`` caps each stream
    (approximately). Raises BrokerUnavailable when the broker goes away, RecordingError
    when the file turns out to be damaged.
    """
    written = 0
    pipe = client.pipeline(transaction=False)
    first_ts: int | None = None
    t0 = time.monotonic()
    try:
        for rec in reader:
            if first_ts is None:
                first_ts, t0 = rec.ts_ms, time.monotonic()
            wait = 0.0 if fast else (
                (rec.ts_ms - first_ts) / 1000 / speed - (time.monotonic() - t0))
            if wait > 0 or len(pipe) >= PIPELINE_MAX:
                pipe.execute()
                yield written
                if wait > 0:
                    time.sleep(wait)
            args = _xadd_args(stream_prefix + rec.stream, rec, maxlen)
            pipe.execute_command(*args)  # type: ignore[no-untyped-call]
            written += 1
        pipe.execute()
    except TRANSIENT_ERRORS as exc:
        raise BrokerUnavailable(f"lost the broker after {written} entries: {exc}") from exc
    yield written


__all__ = ["FORMAT_VERSION", "MAGIC", "Record", "Recorder", "RecordingError", "RecordingReader",
           "RecordingWriter", "check_file", "entry_ms", "graph_streams", "read_all", "replay"]


def describe_file(path: str | Path) -> dict[str, Any]:
    """What a recording holds (read and checked to the end): its header, and per stream the
    entries, message types, bytes and time span (``procgraph record --info``)."""
    reader = RecordingReader(path)
    streams: dict[str, dict[str, Any]] = {}
    total = 0
    try:
        for rec in reader:
            row = streams.setdefault(rec.stream, {"entries": 0, "bytes": 0, "types": {},
                                                  "first_ms": rec.ts_ms, "last_ms": rec.ts_ms})
            row["entries"] += 1
            row["bytes"] += sum(len(k) + len(v) for k, v in rec.fields)
            row["first_ms"] = min(row["first_ms"], rec.ts_ms)
            row["last_ms"] = max(row["last_ms"], rec.ts_ms)
            header = dict(rec.fields).get(HEADER_FIELD)
            kind = "-"
            if header is not None:
                try:
                    h = json.loads(header)
                    kind = f"{h.get('type')}/v{h.get('type_version')}"
                except (ValueError, AttributeError):
                    kind = "<undecodable>"
            row["types"][kind] = row["types"].get(kind, 0) + 1
            total += 1
    finally:
        reader.close()
    firsts = [r["first_ms"] for r in streams.values()]
    lasts = [r["last_ms"] for r in streams.values()]
    return {"file": str(path), "bytes": reader.size, "format_version": FORMAT_VERSION,
            "header": reader.header, "entries": total,
            "start_ms": min(firsts) if firsts else None,
            "duration_s": (max(lasts) - min(firsts)) / 1000 if firsts else 0.0,
            "streams": streams}
