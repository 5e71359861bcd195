"""A connection of one's own for the per-message commands: pipelined, without the client layer.

Every command through a redis-py client goes through its pool (checkout, a poll of the
socket, release), its retry wrapper, its event dispatch and its metrics recorder: about
90 us of CPU per call on these machines, more than the broker's work for a small entry. The
commands each message costs (an agent's XREADGROUP with the acks sent along, a handler's
XADDs) go instead through a :class:`Link`: one connection made from the client's own
settings (URL, password, TLS, the zero-copy packer), written as one pipelined packet, its raw
replies read back. What redis-py adds on top of the replies (e.g. XREADGROUP's fields as a
dict) the caller does itself.

Errors are those of a redis-py pipeline: a refused command raises its ``ResponseError`` once
every reply is read (the connection stays usable); a broken connection is dropped and raises
``ConnectionError`` or ``TimeoutError``, for :func:`procgraph.transport.retry.retry` to ride
out, after one immediate try on a new connection when an old one broke (a connection the
broker or a firewall closed while idle: redis-py's client retries that too; not after a
timeout).
:attr:`Link.reconnects` counts the connections made after the first, so a reader knows when
a reply may have been lost on the way.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import ResponseError

from procgraph.errors import TRANSIENT_ERRORS
from procgraph.transport.packer import pack_small

__all__ = ["Link", "pack"]


class Link:
    """One connection to ``client``'s broker for pipelined commands and their raw replies."""

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self.conn: Any = pool.connection_class(**pool.connection_kwargs)
        self.conn.register_connect_callback(self._made)
        # redis-py's connection is in reference cycles; left to the garbage collector its
        # socket is closed in no set order (a ResourceWarning): closed when the link goes
        weakref.finalize(self, self.conn.disconnect)
        #: connections made so far
        self.connects = 0
        self._lock = threading.Lock()

    def _made(self, connection: Any) -> None:
        """redis-py's connect callback (a method: redis-py keeps a weak reference)."""
        self.connects += 1

    @property
    def reconnects(self) -> int:
        """Connections made after the first (a reply may have been lost with the one
        before)."""
        return max(0, self.connects - 1)

    def execute(self, commands: Sequence[Sequence[Any]], small: bool = False) -> list[Any]:
        """Send ``commands`` in one write and return their raw replies, in order.

        ``small``: every argument is small (no array payload), so the commands are packed
        in one go in C (:func:`~procgraph.transport.packer.pack_small`); else large
        payloads are written from their own buffers, without a copy."""
        packed = pack(self.conn, commands, small)
        with self._lock:
            old = self.conn._sock is not None
            try:
                return self._round_trip(packed, len(commands))
            except TRANSIENT_ERRORS as exc:
                self.conn.disconnect()
                if not old or isinstance(exc, redis.TimeoutError):
                    raise  # a new connection failed, or the broker is slow: back off
            try:  # the old connection was gone: once more at once, on a new one
                return self._round_trip(packed, len(commands))
            except TRANSIENT_ERRORS:
                self.conn.disconnect()
                raise

    def _round_trip(self, packed: list[Any], count: int) -> list[Any]:
        self.conn.send_packed_command(packed)
        replies: list[Any] = []
        refused: ResponseError | None = None
        for _ in range(count):
            try:
                replies.append(self.conn.read_response())
            except ResponseError as exc:  # that command was refused; read the others
                replies.append(exc)
                refused = refused or exc
        if refused is not None:
            raise refused
        return replies

    def close(self) -> None:
        """Close the connection (a later :meth:`execute` opens a new one)."""
        with self._lock:
            self.conn.disconnect()


def pack(conn: Any, commands: Sequence[Sequence[Any]], small: bool) -> list[Any]:
    """``commands`` as the chunks to write on redis-py connection ``conn``: one buffer
    packed in C when every argument is ``small``, else with large payloads kept as their own
    chunks (``conn``'s zero-copy packer)."""
    return [pack_small(commands)] if small else conn.pack_commands(commands)
