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
of ports with a ``prepare_<port>`` hook: their per-message work then overlaps the handler's),
in order, after handing the chunk over: the consume loop takes each entry's result with
:meth:`ReadAhead.decoded_for` (waiting only for that entry) and decodes the others itself. At
most :data:`MAX_DECODED` results wait to be taken; a stop ends the decoding after the entry
in hand (the rest stay pending in the broker).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from procgraph.transport.reader import Entry, GroupReader

Chunk = list[tuple[str, Entry]]
#: results decoded ahead and not taken yet, at most (what they hold, e.g. a model's input
#: tensor, stays bounded)
MAX_DECODED = 16


class ReadAhead:
    """Reads of one :class:`GroupReader`: blocking in the caller's thread, or ahead in a
    thread of its own (:meth:`start`, then :meth:`take`)."""

    def __init__(self, reader: GroupReader, count: int, stop: threading.Event,
                 decode: Callable[[str, Entry], Any | None] | None = None) -> None:
        self.reader = reader
        self.count = count
        self.stop = stop
        self.decode = decode
        #: (stream, entry id) -> what ``decode`` returned for an entry read ahead (not None)
        self._decoded: dict[tuple[str, bytes], Any] = {}
        #: entries of the chunk handed over that the helper has not decoded yet
        self._todo: set[tuple[str, bytes]] = set()
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

    def decoded_for(self, stream: str, entry_id: bytes) -> Any | None:
        """What ``decode`` returned for an entry read ahead (waits while the helper has it
        still to do), or None: decode it yourself."""
        key = (stream, entry_id)
        with self._cond:
            while key in self._todo:
                self._cond.wait(0.1)
            done = self._decoded.pop(key, None)
            self._cond.notify_all()
        return done

    def take(self) -> Chunk:
        """The read-ahead's chunk (waits for a read in progress); [] if none was started
        (or the loop is stopping)."""
        with self._cond:
            while self._wanted and not self.stop.is_set():
                self._cond.wait(0.1)
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            got, self._result = self._result, None
        return got or []

    def close(self) -> None:
        """End the helper thread: a read in progress is left to finish (2 s at most), a
        ``decode`` call in progress too (however long: the agent's teardown must not overlap
        its prepare hook)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=None if self.decode is not None else 2.0)

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
            except BaseException as exc:  # handed to the consume loop at take()
                error = exc
            with self._cond:
                self._result, self._error, self._wanted = got, error, False
                if self.decode is not None and got:
                    self._todo = {(stream, entry[0]) for stream, entry in got}
                self._cond.notify_all()
            if self.decode is not None and got:
                self._decode_all(got)

    def _decode_all(self, got: Chunk) -> None:
        """Decode a chunk handed over, in order, never more than MAX_DECODED untaken."""
        assert self.decode is not None
        try:
            for stream, entry in got:
                key = (stream, entry[0])
                with self._cond:
                    while (len(self._decoded) >= MAX_DECODED
                           and not (self._closed or self.stop.is_set())):
                        self._cond.wait(0.1)
                    if self._closed or self.stop.is_set():
                        return
                done = self.decode(stream, entry)
                with self._cond:
                    if done is not None:
                        self._decoded[key] = done
                    self._todo.discard(key)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._todo = set()  # nobody waits for what is not decoded now
                self._cond.notify_all()
