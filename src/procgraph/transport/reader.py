"""Reading input streams: consumer groups, XREADGROUP, and the acks sent along with reads.

One :class:`GroupReader` per broker reads all of an agent's input streams on it as one
consumer (``<agent>-<replica>``) of each stream's group (named after the reading agent).
What is done with the entries read (acks, claims, dead letters, recovery) lives in
:mod:`procgraph.delivery`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.exceptions import ResponseError

from procgraph.delivery.acks import AckQueue, queue_xacks, xack_commands_for
from procgraph.edges import create_group_counted
from procgraph.transport.link import Link
from procgraph.transport.retry import retry

log = logging.getLogger("procgraph.transport")
T = TypeVar("T")
#: one stream entry as redis-py returns it: (id, fields)
Entry = tuple[bytes, dict[bytes, bytes]]


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
        self.acks = AckQueue()
        #: the connection the reads go on (acks sent along), outside the client's pool
        self.link = Link(client)
        #: the last id handed out per stream (entries after it in our pending list came in
        #: a reply that was lost)
        self._last: dict[str, bytes] = {}

    @property
    def _group_of(self) -> dict[str, str]:
        return {s.stream: s.group for s in self.specs.values()}

    def ensure_groups(self, start: str | None = None) -> None:
        """Create the consumer groups (and streams) that do not exist yet.

        ``start`` overrides where new groups begin: after a broker restart they begin at
        ``0``, since everything in the (new) stream arrived after the restart.
        """
        for spec in self.specs.values():
            create_group_counted(self.client, spec.stream, spec.group, start or spec.start)

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` on this reader's broker, riding out outages and lost groups."""
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
        self.acks.add(stream, entry_id)

    def flush_acks(self) -> None:
        """Send queued acknowledgements now."""
        acks = self.acks.take()
        if not acks:
            return

        def send() -> None:
            pipe = self.client.pipeline(transaction=False)
            queue_xacks(pipe, acks, self._group_of)
            pipe.execute()

        self.call(send, "XACK")

    def read(self, count: int, block_ms: int | None,
             pending: bool = False) -> list[tuple[str, Entry]]:
        """Read new entries (or this consumer's own pending ones), flushing acks first.

        ``block_ms``: how long to wait for new entries; None: do not wait.

        When a read had to be retried or its connection (:attr:`link`) was made anew, the
        broker may have delivered entries whose reply never arrived: they are in this
        consumer's pending list, which ``>`` never returns. They are read back (pending
        entries after the last id this reader handed out on each stream) and returned
        first, so none is stranded.
        """
        acks = self.acks.take()
        attempts = 0
        connected = self.link.reconnects

        def call() -> list[Any]:
            nonlocal attempts
            attempts += 1
            return self._xreadgroup(acks, count, None if pending else block_ms,
                                    {s: "0" if pending else ">" for s in self.specs})

        out = self._entries(self.call(call, "XREADGROUP"))
        if (attempts > 1 or self.link.reconnects != connected) and not pending:
            after = {s: self._last.get(s, "0") for s in self.specs}
            lost = self._entries(self.call(lambda: self._xreadgroup({}, count, None, after),
                                           "XREADGROUP"))
            seen = {(stream, entry[0]) for stream, entry in out}
            again = sum((stream, entry[0]) not in seen for stream, entry in lost)
            if again:
                log.warning("read %d entr%s again whose reply was lost", again,
                            "y" if again == 1 else "ies")
            ids = {(stream, entry[0]) for stream, entry in lost}
            out = lost + [e for e in out if (e[0], e[1][0]) not in ids]
        for stream, (entry_id, _) in out:
            if _newer(entry_id, self._last.get(stream)):
                self._last[stream] = entry_id
        return out

    def _xreadgroup(self, acks: dict[str, list[bytes]], count: int, block_ms: int | None,
                    ids: dict[str, Any]) -> list[Any]:
        """One round trip on :attr:`link`: the queued acks, then one XREADGROUP per group
        from ``ids``; the XREADGROUP replies, raw."""
        by_group: dict[str, dict[str, Any]] = {}
        for stream, spec in self.specs.items():
            by_group.setdefault(spec.group, {})[stream] = ids[stream]
        commands = xack_commands_for(acks, self._group_of)
        sent = len(commands)
        for group, streams in by_group.items():
            command: list[Any] = ["XREADGROUP", "GROUP", group, self.consumer, "COUNT", count]
            if block_ms is not None:
                command += ["BLOCK", block_ms]
            commands.append((*command, "STREAMS", *streams, *streams.values()))
        return self.link.execute(commands, small=True)[sent:]

    def close(self) -> None:
        """Close the reads' connection."""
        self.link.close()

    @staticmethod
    def _entries(replies: list[Any]) -> list[tuple[str, Entry]]:
        """Raw XREADGROUP replies (RESP2 lists, or RESP3 maps) as (stream, (id, fields))."""
        out: list[tuple[str, Entry]] = []
        for reply in replies:
            streams = reply.items() if isinstance(reply, dict) else reply or []
            for stream_name, entries in streams:
                stream = stream_name.decode() if isinstance(stream_name, bytes) else stream_name
                for entry_id, fields in entries or []:
                    out.append((stream, (entry_id, _fields(fields))))
        return out


def _fields(raw: Any) -> dict[bytes, bytes]:
    """An entry's fields from its raw reply: a flat list of names and values, None for an
    entry deleted since it was delivered (its fields then read as empty)."""
    if not raw:
        return {}
    if isinstance(raw, dict):
        return raw
    it = iter(raw)
    return dict(zip(it, it, strict=False))


def _newer(entry_id: bytes, than: bytes | str | None) -> bool:
    """Whether stream id ``entry_id`` comes after ``than`` (None: nothing yet)."""
    if than is None:
        return True
    return _id_key(entry_id) > _id_key(than)


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    """A stream id (``<ms>-<seq>``, or ``<ms>``) as numbers, in the order of the stream."""
    ms, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(ms), int(seq or 0)
