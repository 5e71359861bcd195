"""Backpressure on lossless edges: nothing unread is ever trimmed.

Guarantee: a stream read by at least one *lossless* consumer group is trimmed only up to
the first entry the slowest lossless group has not acknowledged (``XTRIM MINID``), and its
producer blocks while the backlog is at the cap. Latest-policy readers may miss entries.

The groups of the lossless readers are created before the producer's first entry, so a
reader that starts after its producer (no supervisor, e.g. on Kubernetes) misses nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import redis
from redis.exceptions import ResponseError

from procgraph.transport.retry import TRANSIENT, retry


class LosslessGate:
    """Holds one stream's producer back until every lossless group made room.

    The writer calls :meth:`admit` before each (batch of) XADD with the number of entries
    and the current cap; it trims what every lossless group acknowledged and waits while
    the stream is still at the cap. ``blocked_s`` totals the time spent waiting.
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        groups: tuple[str, ...],
        stop: threading.Event,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.groups = groups
        self.stop = stop
        self.on_wait = on_wait  # called while held back (a waiting producer is alive)
        self._groups_ready = False
        self._since_check = 0
        self._est_len = 0
        self.blocked_s = 0.0

    def admit(self, entries: int, cap: int) -> None:
        """Make room for ``entries`` more entries under ``cap`` (blocks while full)."""
        self.ensure_reader_groups()
        self._since_check += entries
        self._est_len += entries
        if self._est_len >= cap or self._since_check >= max(1, cap // 8):
            self._make_room(cap)

    def ensure_reader_groups(self, start: str = "$") -> None:
        """Create the lossless readers' groups before the first entry."""
        if self._groups_ready and start == "$":
            return
        for group in self.groups:
            try:
                retry(lambda g=group: self.client.xgroup_create(  # type: ignore[misc]
                    self.stream, g, id=start, mkstream=True), "create group", self.stop)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    def recreate_reader_groups(self) -> None:
        """After a broker restart: the groups begin at 0 of the new, empty stream."""
        with contextlib.suppress(*TRANSIENT):
            self.ensure_reader_groups(start="0")

    def _make_room(self, cap: int) -> None:
        waited_from = time.monotonic()
        delay = 0.001
        while True:
            length = retry(self.trim_acked, f"trim {self.stream}", self.stop)
            self._since_check = 0
            self._est_len = length + 1
            if length < cap or self.stop.is_set():
                break
            if self.on_wait is not None:
                self.on_wait()
            self.stop.wait(delay)
            delay = min(delay * 2, 0.05)
        self.blocked_s += time.monotonic() - waited_from

    def trim_acked(self) -> int:
        """Trim what every lossless group acknowledged; return the stream length."""
        stream = self.stream
        try:
            groups = {g["name"].decode(): g for g in self.client.xinfo_groups(stream)}
        except ResponseError:
            return 0  # no stream yet
        floor: bytes | None = None
        for name in self.groups:
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
