"""Redis streams transport: connections, capped writers with backpressure, group readers."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from procgraph.constants import dead_letter_key

log = logging.getLogger("procgraph.transport")
T = TypeVar("T")
Entry = tuple[bytes, dict[bytes, bytes]]
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
#: payloads above this size are sent as separate chunks instead of being copied
_CUTOFF = 512 * 1024

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency, but stay usable without
    _hiredis_pack = None


class _ZeroCopyPacker:
    """RESP command packer that sends large payloads as they are, without copying.

    redis-py's hiredis packer copies every argument into one buffer (about 9 ms for a
    5 MB frame here); this one keeps big buffers and memoryviews as separate chunks.
    """

    def pack(self, *args: Any) -> list[bytes | memoryview]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        if _hiredis_pack is not None and not any(
            isinstance(a, (bytes, bytearray, memoryview)) and len(a) > _CUTOFF for a in args
        ):  # small command: hiredis packs it in C
            try:
                return [_hiredis_pack(tuple(
                    bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args))]
            except TypeError as exc:
                raise redis.DataError(str(exc)) from exc
        out: list[bytes | memoryview] = []
        buf = bytearray(b"*%d\r\n" % len(args))
        for arg in args:
            if isinstance(arg, memoryview):
                data: bytes | memoryview = arg if arg.format == "B" else arg.cast("B")
            elif isinstance(arg, (bytes, bytearray)):
                data = arg
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


def connect(url: str, **kwargs: Any) -> redis.Redis:
    """A redis-py client for ``url`` with the zero-copy packer and keepalive."""
    pool = redis.ConnectionPool.from_url(
        url,
        command_packer=_ZeroCopyPacker(),
        socket_keepalive=True,
        socket_connect_timeout=kwargs.pop("socket_connect_timeout", 2.0),
        health_check_interval=kwargs.pop("health_check_interval", 0),
        **kwargs,
    )
    return redis.Redis(connection_pool=pool)


@dataclass
class Backoff:
    """Exponential backoff with a cap: 0.1 s, 0.2 s, ... up to ``max_s``."""

    start_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0
    _next: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        """The delay before the next attempt; grows each call."""
        self._next = self.start_s if self._next == 0 else min(self._next * self.factor, self.max_s)
        return self._next

    def reset(self) -> None:
        """Start again from the shortest delay after a success."""
        self._next = 0.0


def retry(
    fn: Callable[[], T],
    what: str,
    stop: threading.Event | None = None,
    on_reconnect: Callable[[], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, backing off while the broker is unreachable.

    Only connection errors are retried; ``on_reconnect`` runs before each retry (e.g. to
    re-create consumer groups lost with a restarted broker). Raises InterruptedError when
    ``stop`` is set while waiting.
    """
    backoff = Backoff()
    failures = 0
    while True:
        try:
            result = fn()
            if failures:
                log.warning("%s: broker is back after %d failed attempt(s)", what, failures)
            return result
        except TRANSIENT as exc:
            failures += 1
            delay = backoff.next_delay()
            if failures == 1 or failures % 20 == 0:
                log.warning("%s: broker unreachable (%s); retrying every <= %.1fs",
                            what, exc, delay)
            if stop is not None:
                if stop.wait(delay):
                    raise InterruptedError(what) from exc
            else:
                time.sleep(delay)
            if on_reconnect is not None:
                with contextlib.suppress(TRANSIENT):
                    on_reconnect()


@dataclass
class WriterConfig:
    """Where and how an output port writes."""

    stream: str
    maxlen: int
    max_bytes: int
    lossless_groups: tuple[str, ...] = ()


class StreamWriter:
    """Appends entries to one stream, capped, with backpressure for lossless readers.

    Without lossless readers the stream is trimmed with ``XADD MAXLEN ~``. With them, the
    writer trims only entries every lossless group has acknowledged (``XTRIM MINID``) and
    blocks while the backlog is at the cap, so nothing unread is ever trimmed.
    """

    def __init__(
        self,
        client: redis.Redis,
        config: WriterConfig,
        stop: threading.Event,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.stop = stop
        self.on_wait = on_wait  # called while held back (a waiting producer is alive)
        self._groups_ready = False
        self._cap = config.maxlen
        self._since_check = 0
        self._est_len = 0
        self.blocked_s = 0.0

    def _cap_for(self, nbytes: int) -> int:
        by_bytes = max(2, self.config.max_bytes // max(nbytes, 1))
        return max(1, min(self.config.maxlen, by_bytes))

    def send(self, fields: Mapping[bytes, bytes | memoryview]) -> bytes:
        """Append one entry; returns its id. Waits (lossless) or trims (latest)."""
        self._prepare([fields])
        return retry(lambda: self._xadd(self.client, fields), f"XADD {self.config.stream}",
                     self.stop, on_reconnect=self._on_reconnect)

    def _prepare(self, batch: list[Mapping[bytes, bytes | memoryview]]) -> None:
        """Size the cap from the largest entry; for lossless readers, make room first."""
        nbytes = max(
            sum(len(v) if isinstance(v, bytes) else v.nbytes for v in f.values()) for f in batch
        )
        self._cap = self._cap_for(nbytes)
        if self.config.lossless_groups:
            self._ensure_reader_groups()
            self._since_check += len(batch)
            self._est_len += len(batch)
            if self._est_len >= self._cap or self._since_check >= max(1, self._cap // 8):
                self._make_room()

    def _xadd(self, client: Any, fields: Mapping[bytes, bytes | memoryview]) -> Any:
        """XADD on a client or pipeline: trimmed for latest-only streams, untrimmed else."""
        if self.config.lossless_groups:
            return client.xadd(self.config.stream, fields)
        return client.xadd(self.config.stream, fields, maxlen=self._cap, approximate=True)

    @property
    def _on_reconnect(self) -> Callable[[], None] | None:
        return self._recreate_reader_groups if self.config.lossless_groups else None

    def _ensure_reader_groups(self, start: str = "$") -> None:
        """Create the lossless readers' groups before the first entry, so a reader that
        starts after this producer (no supervisor, e.g. on Kubernetes) misses nothing."""
        if self._groups_ready and start == "$":
            return
        for group in self.config.lossless_groups:
            try:
                retry(lambda g=group: self.client.xgroup_create(
                    self.config.stream, g, id=start, mkstream=True), "create group", self.stop)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    def _recreate_reader_groups(self) -> None:
        with contextlib.suppress(*TRANSIENT):
            self._ensure_reader_groups(start="0")

    def send_many(self, batch: list[Mapping[bytes, bytes | memoryview]]) -> None:
        """Append several entries in one round trip (in order), with the same rules."""
        if len(batch) == 1:
            self.send(batch[0])
            return
        self._prepare(batch)

        def send() -> None:
            pipe = self.client.pipeline(transaction=False)
            for fields in batch:
                self._xadd(pipe, fields)
            pipe.execute()

        retry(send, f"XADD {self.config.stream}", self.stop, on_reconnect=self._on_reconnect)

    def _make_room(self) -> None:
        waited_from = time.monotonic()
        delay = 0.001
        while True:
            length = retry(self._trim_acked, f"trim {self.config.stream}", self.stop)
            self._since_check = 0
            self._est_len = length + 1
            if length < self._cap or self.stop.is_set():
                break
            if self.on_wait is not None:
                self.on_wait()
            self.stop.wait(delay)
            delay = min(delay * 2, 0.05)
        self.blocked_s += time.monotonic() - waited_from

    def _trim_acked(self) -> int:
        """Trim what every lossless group acknowledged; return the stream length."""
        stream = self.config.stream
        try:
            groups = {g["name"].decode(): g for g in self.client.xinfo_groups(stream)}
        except ResponseError:
            return 0  # no stream yet
        floor: bytes | None = None
        for name in self.config.lossless_groups:
            info = groups.get(name)
            if info is None:
                return int(self.client.xlen(stream))  # reader not there yet: keep everything
            oldest = info["last-delivered-id"]
            summary = self.client.xpending(stream, name) if info["pending"] else None
            if summary and summary["pending"] and summary["min"] is not None:
                oldest = min(oldest, summary["min"], key=_id_tuple)
            else:  # nothing pending (or all acked since XINFO): keep from the next unread
                oldest = _next_id(oldest)
            floor = oldest if floor is None else min(floor, oldest, key=_id_tuple)
        if floor is not None and floor != b"0-0":
            self.client.xtrim(stream, minid=floor, approximate=True)
        return int(self.client.xlen(stream))


def _id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: bytes | str) -> bytes:
    ms, seq = _id_tuple(entry_id)
    return f"{ms}-{seq + 1}".encode()


@dataclass
class ReadSpec:
    """One stream an agent reads, in its own consumer group."""

    stream: str
    group: str
    port: str
    start: str = "$"


class GroupReader:
    """Reads a set of streams on one broker through consumer groups, one consumer."""

    def __init__(
        self,
        client: redis.Redis,
        specs: Iterable[ReadSpec],
        consumer: str,
        stop: threading.Event,
    ) -> None:
        self.client = client
        self.specs = {s.stream: s for s in specs}
        self.consumer = consumer
        self.stop = stop
        self._acks: dict[str, list[bytes]] = {}
        self._acks_lock = threading.Lock()  # the handler thread queues, the reader sends

    def ensure_groups(self, start: str | None = None) -> None:
        """Create the consumer groups (and streams) that do not exist yet.

        ``start`` overrides where new groups begin: after a broker restart they begin at
        ``0``, since everything in the (new) stream arrived after the restart.
        """
        for spec in self.specs.values():
            try:
                self.client.xgroup_create(spec.stream, spec.group, id=start or spec.start,
                                          mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _call(self, fn: Callable[[], T], what: str) -> T:
        while True:
            try:
                return retry(fn, what, self.stop, on_reconnect=self._recreate_groups)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("%s: consumer group missing (broker restarted?); re-creating", what)
                retry(self._recreate_groups, "create groups", self.stop)

    def _recreate_groups(self) -> None:
        self.ensure_groups(start="0")

    def ack_later(self, stream: str, entry_id: bytes) -> None:
        """Queue an acknowledgement; it is sent with the next read or flush."""
        with self._acks_lock:
            self._acks.setdefault(stream, []).append(entry_id)

    def _take_acks(self) -> dict[str, list[bytes]]:
        with self._acks_lock:
            acks, self._acks = self._acks, {}
        return acks

    def flush_acks(self) -> None:
        """Send queued acknowledgements now."""
        acks = self._take_acks()
        if not acks:
            return

        def send() -> None:
            pipe = self.client.pipeline(transaction=False)
            for stream, ids in acks.items():
                pipe.xack(stream, self.specs[stream].group, *ids)
            pipe.execute()

        self._call(send, "XACK")

    def read(self, count: int, block_ms: int, pending: bool = False) -> list[tuple[str, Entry]]:
        """Read new entries (or this consumer's own pending ones), flushing acks first."""
        acks = self._take_acks()
        by_group: dict[str, dict[str, str]] = {}
        for spec in self.specs.values():
            by_group.setdefault(spec.group, {})[spec.stream] = "0" if pending else ">"

        def call() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for stream, ids in acks.items():
                pipe.xack(stream, self.specs[stream].group, *ids)
            for group, streams in by_group.items():
                pipe.xreadgroup(
                    group,
                    self.consumer,
                    streams,
                    count=count,
                    block=None if pending else block_ms,
                )
            return pipe.execute()

        replies = self._call(call, "XREADGROUP")[len(acks) :]
        out: list[tuple[str, Entry]] = []
        for reply in replies:
            for stream_name, entries in reply or []:
                stream = stream_name.decode() if isinstance(stream_name, bytes) else stream_name
                for entry_id, fields in entries:
                    out.append((stream, (entry_id, fields or {})))
        return out

    def claim_idle(self, min_idle_ms: int, count: int = 100) -> list[tuple[str, Entry]]:
        """Take over entries another consumer left pending longer than ``min_idle_ms``."""
        out: list[tuple[str, Entry]] = []
        for spec in self.specs.values():
            reply = self._call(
                lambda s=spec: self.client.xautoclaim(
                    s.stream, s.group, self.consumer, min_idle_ms, "0-0", count=count
                ),
                "XAUTOCLAIM",
            )
            for entry_id, fields in reply[1]:
                if fields is not None:
                    out.append((spec.stream, (entry_id, fields)))
        return out

    def dead_letter(self, stream: str, entry: Entry, reason: str, agent: str) -> None:
        """Move an entry to ``<stream>:dead`` with the reason, then acknowledge it."""
        entry_id, fields = entry
        record: dict[bytes, bytes] = dict(fields)
        record[b"dead:reason"] = reason.encode()
        record[b"dead:agent"] = agent.encode()
        record[b"dead:source_id"] = entry_id
        record[b"dead:stream"] = stream.encode()
        group = self.specs[stream].group

        def move() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.xadd(dead_letter_key(stream), record, maxlen=10_000, approximate=True)
            pipe.xack(stream, group, entry_id)
            pipe.execute()

        self._call(move, "dead-letter")
