"""Where an agent's sends go: collected per handler call, buffered for a source, or sent."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from procgraph import codec
from procgraph.delivery.sendbuffer import SendBuffer
from procgraph.message import Message
from procgraph.transport.writer import Fields, StreamWriter


class Outbox:
    """Encodes each sent message and routes it to its output stream.

    Inside a handler call (between :meth:`begin` and :meth:`commit`) the entries are
    collected and written together when the handler returns, before its input is acked;
    :meth:`discard` drops those of a failed attempt. A source's sends go through a
    :class:`~procgraph.delivery.sendbuffer.SendBuffer` once one is attached. A message too
    large for its stream or broker raises :class:`~procgraph.errors.MessageTooLarge` here, in
    ``send()``, before it is collected or buffered: it is never sent, nor resent.
    """

    def __init__(self, writers: Mapping[str, StreamWriter],
                 encodings: Mapping[str, dict[str, tuple[str, int]]]) -> None:
        self.writers = writers
        self.encodings = encodings
        self.buffer: SendBuffer | None = None
        #: per port, what turns an encoded entry into the one sent (the shared-memory
        #: claim-check moves large fields out of the entry); absent: sent as encoded
        self.stash: dict[str, Callable[[Fields], Fields]] = {}
        self._collect: dict[str, list[Fields]] | None = None
        #: a stash moved fields of an entry collected since :meth:`begin`
        self.moved = False

    def deliver(self, port: str, msg: Message) -> None:
        """Encode ``msg`` for output ``port`` and send, collect or buffer it."""
        fields: Fields = codec.encode(msg, self.encodings[port])
        self.writers[port].check_size(fields, f"output {port!r}")
        stash = self.stash.get(port)
        if stash is not None:
            sent = stash(fields)
            self.moved = self.moved or sent is not fields
            fields = sent
        if self._collect is not None:  # inside a handler: sent together when it returns
            self._collect.setdefault(port, []).append(fields)
        elif self.buffer is not None:
            self.buffer.add(port, fields)
        else:
            self.writers[port].send(fields)

    def begin(self) -> None:
        """Start collecting the sends of one handler call."""
        self._collect = {}
        self.moved = False

    def discard(self) -> None:
        """Drop what a failed handler attempt sent."""
        self._collect = None

    def commit(self) -> None:
        """Write what the handler call sent, one pipelined batch per port."""
        for port, batch in self.take().items():
            self.writers[port].send_many(batch, checked=True)  # sizes checked in deliver()

    def take(self) -> dict[str, list[Fields]]:
        """What the handler call sent, per port, to be written later (collecting ends)."""
        collected, self._collect = self._collect or {}, None
        return collected
