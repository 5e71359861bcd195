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

from procgraph.delivery.acks import AckQueue, queue_xacks
from procgraph.edges import create_group_counted
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

    def read(self, count: int, block_ms: int, pending: bool = False) -> list[tuple[str, Entry]]:
        """Read new entries (or this consumer's own pending ones), flushing acks first."""
        acks = self.acks.take()
        by_group: dict[str, dict[str, str]] = {}
        for spec in self.specs.values():
            by_group.setdefault(spec.group, {})[spec.stream] = "0" if pending else ">"
        group_of = self._group_of

        def call() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            sent = queue_xacks(pipe, acks, group_of)
            for group, streams in by_group.items():
                pipe.xreadgroup(
                    group,
                    self.consumer,
                    streams,  # type: ignore[arg-type]
                    count=count,
                    block=None if pending else block_ms,
                )
            return pipe.execute()[sent:]  # the XREADGROUP replies, after the acks'

        replies = self.call(call, "XREADGROUP")
        out: list[tuple[str, Entry]] = []
        for reply in replies:
            for stream_name, entries in reply or []:
                stream = stream_name.decode() if isinstance(stream_name, bytes) else stream_name
                for entry_id, fields in entries:
                    out.append((stream, (entry_id, fields or {})))
        return out
