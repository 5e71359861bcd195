"""A source's sends, coalesced into pipelined XADDs without reordering or losing any.

Guarantee: a source agent's messages are written in the order sent, at most ``linger_s``
(2 ms) after ``send()``, at once when 64 are queued or one is large (>= 64 KB), and
whenever the source calls ``flush()`` or ``sleep()``. Backpressure still holds: a flush
blocks while a lossless stream is full. (A handler's sends are not buffered here: they are
written together when the handler returns, before its input is acknowledged.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from procgraph.transport.writer import Fields, StreamWriter


class SendBuffer:
    """Coalesces a source agent's sends into pipelined XADDs.

    Small messages wait at most ``linger_s`` (or until the source sleeps, or 64 are
    queued); a large one (>= 64 KB) goes out at once with whatever is queued before it.
    Order is kept. Backpressure still holds: a flush blocks while the stream is full.
    """

    MAX_ENTRIES = 64
    BIG_BYTES = 64 * 1024

    def __init__(self, writers: Mapping[str, StreamWriter], stop: threading.Event,
                 linger_s: float = 0.002) -> None:
        self.writers = writers
        self.stop = stop
        self.linger_s = linger_s
        self.items: list[tuple[str, Fields]] = []
        self.first = 0.0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="send-buffer", daemon=True)
        self.thread.start()

    def add(self, port: str, fields: Fields) -> None:
        """Queue one encoded entry; flush when full or when it is large."""
        nbytes = sum(len(v) if isinstance(v, bytes) else v.nbytes for v in fields.values())
        with self.cond:
            self.items.append((port, fields))
            if len(self.items) == 1:
                self.first = time.monotonic()
                self.cond.notify()
            if len(self.items) >= self.MAX_ENTRIES or nbytes >= self.BIG_BYTES:
                self._flush_locked()

    def flush(self) -> None:
        """Write out everything queued now."""
        with self.cond:
            self._flush_locked()

    def _flush_locked(self) -> None:
        items, self.items = self.items, []
        start = 0
        for i in range(1, len(items) + 1):  # consecutive runs of one port, in order
            if i == len(items) or items[i][0] != items[start][0]:
                self.writers[items[start][0]].send_many([f for _, f in items[start:i]])
                start = i

    def _loop(self) -> None:
        with self.cond:
            while not self.stop.is_set():
                if not self.items:
                    self.cond.wait(0.1)
                    continue
                remaining = self.first + self.linger_s - time.monotonic()
                if remaining > 0:
                    self.cond.wait(remaining)
                    continue
                try:
                    self._flush_locked()
                except InterruptedError:
                    return
