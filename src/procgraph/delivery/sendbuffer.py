"""A source's sends: written at once when idle, coalesced only behind a write in flight.

Guarantee: a source agent's messages are written in the order sent (per output port), and
none waits for company. ``send()`` writes the entry to the broker's socket at once, in the
source's own thread, when nothing is in flight on that port; the broker's reply is read by a
thread of the port. What the source sends while a write is in flight is queued, and goes out
in one pipelined write as soon as the reply of the previous one is in. So a paced source
pays one socket write per message, and a fast one gets batches as large as the backlog.

The message's arrays are the sender's: one of at least 64 KiB is written from the sender's
own buffer (no copy) and ``send()`` returns once the broker has it, so the sender may reuse
the buffer at once; smaller ones are copied. (Frames that go through shared memory were
copied into the ring already.)

``flush()`` (and so ``sleep()``) returns once everything sent before it is in the broker.
Backpressure still holds: while a lossless stream is full the write waits, the queue fills,
and ``send()`` blocks once :attr:`SendBuffer.MAX_ENTRIES` entries or
:attr:`SendBuffer.MAX_BYTES` bytes are queued. A connection lost with a write in flight is
written again through the writer's own retry (a reply lost on the way can double that
batch, as any retried XADD can). An error (an entry the broker refused, the line stopping)
is raised in the source at its next ``send()`` or ``flush()``. A handler's sends do not
come here: they are written together when the handler returns, before its input is acked.

A source that uses its state (``state`` given) has its sends held for its next state change
instead, and written with it in one transaction (:mod:`procgraph.delivery.together`).
"""

from __future__ import annotations

import select
import threading
from collections.abc import Mapping
from typing import Any

from redis.exceptions import ResponseError

from procgraph.delivery.together import HeldSends
from procgraph.errors import TRANSIENT_ERRORS
from procgraph.state.buffer import Store
from procgraph.transport.link import pack
from procgraph.transport.writer import Fields, StreamWriter, all_small, entry_bytes

#: an entry that views this many bytes of the sender's own array (a camera's frame buffer) is
#: written before ``send()`` returns, since the sender may reuse the buffer; a smaller one is
#: copied when queued
BIG_BYTES = 64 * 1024


class SendBuffer:
    """Writes a source agent's sends as they come, one pipelined port writer per output."""

    #: entries (and bytes) queued behind a write in flight before ``send()`` blocks
    MAX_ENTRIES = 256
    MAX_BYTES = 64 * 1024 * 1024

    def __init__(self, writers: Mapping[str, StreamWriter], stop: threading.Event,
                 state: tuple[Store, Any] | None = None) -> None:
        """``state``: the source's state store and the client of its broker (sends to ports
        on that broker are then written with the state changes that follow them)."""
        self.writers = writers
        self.stop = stop
        self._ports: dict[str, _PortWriter] = {}
        self.held: HeldSends | None = None
        if state is not None:
            self.held = HeldSends(writers, state[0], state[1], stop, self._flush_ports,
                                  self.MAX_ENTRIES, self.MAX_BYTES)

    def add(self, port: str, fields: Fields) -> None:
        """Write one encoded entry now, queue it behind the write in flight, or hold it for
        the source's next state change."""
        if self.held is not None and self.held.hold(port, fields):
            return
        pipe = self._ports.get(port)
        if pipe is None:
            pipe = self._ports[port] = _PortWriter(self.writers[port], self.stop,
                                                   self.MAX_ENTRIES, self.MAX_BYTES)
        pipe.add(fields)

    def flush(self) -> None:
        """Return once everything sent so far is in the broker (raise what a write hit)."""
        self._flush_ports()
        if self.held is not None:
            self.held.commit()

    def _flush_ports(self) -> None:
        for pipe in list(self._ports.values()):
            pipe.flush()

    def close(self) -> None:
        """Flush, then close the ports' connections."""
        try:
            self.flush()
        finally:
            if self.held is not None:
                self.held.close()
            for pipe in self._ports.values():
                pipe.close()


class _PortWriter:
    """One output port's writes on a connection of its own: at most one write in flight.

    Whoever finds the port idle writes (the source's thread on ``add``, the reply thread
    when a reply is in and entries are queued), outside the lock, so the source can queue
    meanwhile; the reply thread reads the replies. While nothing is in flight the reply thread
    waits on the socket, not on the lock's condition: a write then wakes no thread of this
    process, and the broker's reply wakes one, as it does a plain redis-py client.
    """

    def __init__(self, writer: StreamWriter, stop: threading.Event, max_entries: int,
                 max_bytes: int) -> None:
        self.writer = writer
        self.stop = stop
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        pool = writer.client.connection_pool
        self.conn: Any = pool.connection_class(**pool.connection_kwargs)
        self.cond = threading.Condition()
        self.queue: list[Fields] = []
        self.queued_bytes = 0
        self.in_flight: list[Fields] | None = None
        #: of the batch in flight: being written, or "sent" (whole on the socket) / "broken"
        self.state = ""
        self.error: BaseException | None = None
        self.closed = False
        self.thread = threading.Thread(target=self._replies, daemon=True,
                                       name=f"send-{writer.config.stream}")
        self.thread.start()

    def add(self, fields: Fields) -> None:
        size = entry_bytes(fields)
        if any(isinstance(v, memoryview) for v in fields.values()):
            if size >= BIG_BYTES:  # the sender's own array: written before return
                self.flush()
                self._add(fields, size)
                self.flush()
                return
            fields = {k: bytes(v) if isinstance(v, memoryview) else v  # a copy of its own
                      for k, v in fields.items()}
        self._add(fields, size)

    def _add(self, fields: Fields, size: int) -> None:
        with self.cond:
            self._raise_error()
            while self.queue and (len(self.queue) >= self.max_entries
                                  or self.queued_bytes + size > self.max_bytes):
                if self.stop.is_set() and not self.thread.is_alive():
                    raise InterruptedError("stopping")
                self.cond.wait(0.1)
                self._raise_error()
            if self.in_flight is not None or self.queue:
                self.queue.append(fields)
                self.queued_bytes += size
                return
            self.in_flight, self.state = [fields], ""
        self._write([fields], raise_error=True)

    def flush(self) -> None:
        with self.cond:
            while self.queue or self.in_flight is not None:
                self._raise_error()
                if not self.thread.is_alive():
                    raise InterruptedError("stopping")
                self.cond.wait(0.1)
            self._raise_error()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join(timeout=2.0)
        self.conn.disconnect()

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _write(self, batch: list[Fields], raise_error: bool) -> None:
        """Write ``batch``, claimed as in flight: one pipelined XADD per entry."""
        state = "broken"
        try:
            self.writer.prepare(batch, checked=True)  # the outbox checked sizes on send()
            self.conn.send_packed_command(pack(
                self.conn, [self.writer.xadd_args(f) for f in batch], all_small(batch)))
            state = "sent"
        except TRANSIENT_ERRORS:
            self.conn.disconnect()  # the reply thread writes it again, with retries
        except BaseException as exc:  # e.g. stopped while waiting for room: not written
            with self.cond:
                self.in_flight, self.state = None, ""
                if not raise_error:
                    self.error = exc
                self.cond.notify_all()
            if raise_error:
                raise
            return
        with self.cond:
            self.state = state
            self.cond.notify_all()

    def _replies(self) -> None:
        while True:
            with self.cond:
                if self.in_flight is None and (
                        self.closed or (self.stop.is_set() and not self.queue)):
                    return
                sock = self.conn._sock if self.in_flight is None else None
                if self.in_flight is not None and self.state:
                    batch, state = self.in_flight, self.state
                elif sock is None:  # being written, or no connection yet: the writer notifies
                    self.cond.wait(0.1)
                    continue
            if sock is not None:  # idle: wait for the broker on the socket, outside the lock
                self._await_readable(sock)
                continue
            try:
                ids = self._read(batch) if state == "sent" else None
                if ids is None:  # the connection broke: again, through the writer's retry
                    ids = self.writer.send_many(batch, checked=True)
                elif self.writer.on_sent is not None:
                    self.writer.on_sent(batch, ids)
            except BaseException as exc:  # handed to the source; what is queued is dropped
                with self.cond:
                    self.error = exc
                    self.in_flight, self.state = None, ""
                    self.queue, self.queued_bytes = [], 0
                    self.cond.notify_all()
                if isinstance(exc, InterruptedError):
                    return
                continue
            with self.cond:
                self.in_flight, self.state = None, ""
                queued, self.queue, self.queued_bytes = self.queue, [], 0
                if queued:
                    self.in_flight = queued
                self.cond.notify_all()
            if queued:
                self._write(queued, raise_error=False)

    def _await_readable(self, sock: Any) -> None:
        """Wait (up to 0.1 s) until the broker sends on the idle connection ``sock``.

        What comes while nothing is in flight is the reply of a write that has just begun (the
        loop then finds it in flight) or the connection closing: then, with no write in
        flight, the connection is dropped, and the next write makes a new one.
        """
        try:
            fd = sock.fileno()
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if not poller.poll(100):
                return
        except (OSError, ValueError):  # closed meanwhile by a write that broke
            pass
        with self.cond:
            if self.in_flight is None and self.conn._sock is sock:
                self.conn.disconnect()

    def _read(self, batch: list[Fields]) -> list[bytes] | None:
        """The ids of ``batch`` from its replies; None if the connection broke."""
        ids: list[bytes] = []
        refused: ResponseError | None = None
        try:
            for _ in batch:
                try:
                    ids.append(self.conn.read_response())
                except ResponseError as exc:  # that entry was refused; read the others
                    refused = refused or exc
        except TRANSIENT_ERRORS:
            self.conn.disconnect()
            return None
        if refused is not None:
            raise refused
        return ids
