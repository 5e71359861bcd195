"""Reading one broker's inputs: in the handler's thread when idle, one step ahead when busy.

When nothing is waiting, the consume loop blocks in ``XREADGROUP`` itself, so an entry that
arrives is handled by the thread that read it (no hand-over between threads, which costs a
wake-up and a wait for the interpreter lock). While a full chunk (a backlog) is being
handled, a helper thread reads the next one without blocking, so the socket reads of large
entries overlap with handling (e.g. inference, which releases the GIL); after a short read
nothing else was waiting, and the consume loop does not ask for one. Reads never overlap:
the loop takes the read-ahead's result before it reads again, so the reader's bookkeeping
(acks sent along, lost replies) sees one read at a time, in order.

Given a ``decode`` function, the helper thread also decodes what it read ahead (the entries
of ports with a ``prepare_<port>`` hook: their per-message work then overlaps the handler's);
the results wait in :attr:`ReadAhead.decoded`, by stream and entry id, for the consume loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from procgraph.transport.reader import Entry, GroupReader

Chunk = list[tuple[str, Entry]]


class ReadAhead:
    """Reads of one :class:`GroupReader`: blocking in the caller's thread, or ahead in a
    thread of its own (:meth:`start`, then :meth:`take`)."""

    def __init__(self, reader: GroupReader, count: int, stop: threading.Event,
                 decode: Callable[[str, Entry], Any | None] | None = None) -> None:
        self.reader = reader
        self.count = count
        self.stop = stop
        self.decode = decode
        #: (stream, entry id) -> what ``decode`` returned for an entry read ahead (not None);
        #: the consume loop pops them
        self.decoded: dict[tuple[str, bytes], Any] = {}
        self._cond = threading.Condition()
        self._wanted = False
        self._result: Chunk | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"read-ahead-{reader.consumer}")
        self._thread.start()

    def read(self, block_ms: int) -> Chunk:
        """What the read-ahead got (if started), else a read blocking up to ``block_ms``."""
        got = self.take()
        if got:
            return got
        return self.reader.read(self.count, block_ms)

    def start(self) -> None:
        """Read the next chunk in the background, without blocking for new entries."""
        with self._cond:
            if not self._wanted and self._result is None:
                self._wanted = True
                self._cond.notify_all()

    def take(self) -> Chunk:
        """The read-ahead's chunk (waits for a read in progress); [] if none was started."""
        with self._cond:
            while self._wanted:
                self._cond.wait(0.1)
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            got, self._result = self._result, None
        return got or []

    def close(self) -> None:
        """End the helper thread (a read in progress is left to finish)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=2.0)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._wanted:
                    if self._closed or self.stop.is_set():
                        return
                    self._cond.wait(0.1)
            got: Any = None
            error: BaseException | None = None
            try:
                got = self.reader.read(self.count, None)  # no BLOCK
                if self.decode is not None:
                    for stream, entry in got:
                        done = self.decode(stream, entry)
                        if done is not None:
                            self.decoded[(stream, entry[0])] = done
            except BaseException as exc:  # handed to the consume loop at take()
                error = exc
            with self._cond:
                self._result, self._error, self._wanted = got, error, False
                self._cond.notify_all()
