"""Writing an output port: XADD to one capped stream, one entry or a pipelined batch.

A stream is capped at ``maxlen`` entries and about ``max_bytes`` (whichever is smaller, sized
from the largest entry). Latest-only streams are trimmed with ``XADD MAXLEN ~``; streams with
lossless readers go through :class:`procgraph.delivery.backpressure.LosslessGate`.

Before anything is sent, :meth:`StreamWriter.check_size` refuses an entry that can never be
written: a field over the broker's ``proto-max-bulk-len`` (the broker would drop the
connection, and the entry would be resent forever as "broker unreachable"), or an entry over
the stream's whole byte cap ``max_bytes``. It raises :class:`~procgraph.errors.MessageTooLarge`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from procgraph.delivery.backpressure import LosslessGate
from procgraph.errors import MessageTooLarge
from procgraph.transport.limits import max_bulk_bytes
from procgraph.transport.link import Link
from procgraph.transport.retry import retry

Fields = Mapping[bytes, bytes | memoryview]


def entry_bytes(fields: Fields) -> int:
    """The bytes of an entry's values (its field names not counted)."""
    return sum(len(v) if isinstance(v, bytes) else v.nbytes for v in fields.values())


#: entries under this size are packed in one go in C (copied); larger ones are written from
#: their own buffers (procgraph.transport.packer)
SMALL_ENTRY_BYTES = 64 * 1024


def all_small(batch: list[Fields]) -> bool:
    """Whether every entry of ``batch`` is small enough to be packed with a copy in C: under
    SMALL_ENTRY_BYTES, of bytes and contiguous buffers only (hiredis packs a buffer's memory
    as it lies, strides ignored)."""
    return all(entry_bytes(f) < SMALL_ENTRY_BYTES and all(
        type(v) is bytes or (type(v) is memoryview and v.c_contiguous) for v in f.values())
        for f in batch)


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
        self._cap = config.maxlen
        self._max_bulk: int | None = None
        #: the connection the entries go on, outside the client's pool
        self.link = Link(client)
        self.gate: LosslessGate | None = None
        #: called with (entries, their ids) after each successful write (claim-check
        #: bookkeeping ties shared-memory slots to entry ids)
        self.on_sent: Callable[[list[Fields], list[bytes]], None] | None = None
        if config.lossless_groups:
            self.gate = LosslessGate(client, config.stream, config.lossless_groups, stop,
                                     on_wait=on_wait)

    @property
    def blocked_s(self) -> float:
        """Seconds this writer was held back by lossless readers so far."""
        return self.gate.blocked_s if self.gate is not None else 0.0

    def _cap_for(self, nbytes: int) -> int:
        by_bytes = max(2, self.config.max_bytes // max(nbytes, 1))
        return max(1, min(self.config.maxlen, by_bytes))

    def check_size(self, fields: Fields, what: str = "") -> None:
        """Raise MessageTooLarge if the entry can never be written to this stream.

        A field must be at most the broker's ``proto-max-bulk-len`` and the whole entry at
        most the stream's byte cap (``max_bytes``, the port's ``max_mb``). ``what`` names the
        sender in the message (e.g. ``output 'frames'``).
        """
        if (self._max_bulk is not None and self._max_bulk >= SMALL_ENTRY_BYTES
                and self.config.max_bytes >= SMALL_ENTRY_BYTES
                and entry_bytes(fields) + sum(map(len, fields)) < SMALL_ENTRY_BYTES):
            return  # a small entry fits any field limit and stream cap this large
        sizes = {k: len(v) if isinstance(v, bytes) else v.nbytes for k, v in fields.items()}
        total = sum(sizes.values()) + sum(len(k) for k in sizes)
        name, biggest = max(sizes.items(), key=lambda kv: kv[1])
        where = f"{what} (stream {self.config.stream})" if what else (
            f"stream {self.config.stream}")
        if total > self.config.max_bytes:
            raise MessageTooLarge(
                f"{where}: a message of {total} bytes is over the stream's cap of"
                f" {self.config.max_bytes} bytes (max_mb); it is not sent. Send smaller"
                " arrays (crop, or encoding: jpeg/png) or raise the port's max_mb")
        if self._max_bulk is None:  # asked once per writer
            self._max_bulk = retry(lambda: max_bulk_bytes(self.client),
                                   "CONFIG GET proto-max-bulk-len", self.stop)
        limit = self._max_bulk
        if biggest > limit:
            raise MessageTooLarge(
                f"{where}: field {name.decode(errors='replace')} of {biggest} bytes is over the"
                f" broker's proto-max-bulk-len of {limit} bytes; it is not sent. Send smaller"
                " arrays (crop, split, or encoding: jpeg/png) or raise proto-max-bulk-len on"
                " the broker")

    def send(self, fields: Fields) -> bytes:
        """Append one entry; returns its id. Waits (lossless) or trims (latest)."""
        self.prepare([fields])
        small = all_small([fields])
        result: bytes = retry(lambda: self.link.execute([self.xadd_args(fields)], small)[0],
                              f"XADD {self.config.stream}", self.stop,
                              on_reconnect=self.on_reconnect)
        if self.on_sent is not None:
            self.on_sent([fields], [result])
        return result

    def send_many(self, batch: list[Fields], checked: bool = False) -> list[bytes]:
        """Append several entries in one round trip (in order), with the same rules.

        Returns their ids, in order. ``checked``: the sizes were checked already
        (:meth:`check_size`, as the outbox does on ``send()``).
        """
        if len(batch) == 1 and not checked:
            return [self.send(batch[0])]
        self.prepare(batch, checked=checked)

        small = all_small(batch)

        def send() -> list[bytes]:
            return self.link.execute([self.xadd_args(fields) for fields in batch], small)

        ids: list[bytes] = retry(send, f"XADD {self.config.stream}", self.stop,
                                 on_reconnect=self.on_reconnect)
        if self.on_sent is not None:
            self.on_sent(batch, ids)
        return ids

    def prepare(self, batch: list[Fields], checked: bool = False) -> None:
        """Before writing ``batch``: check sizes (unless ``checked``), size the cap from the
        largest entry; for lossless readers, make room first (blocks while full)."""
        if not checked:
            for fields in batch:
                self.check_size(fields)
        nbytes = max(entry_bytes(f) for f in batch)
        self._cap = self._cap_for(nbytes)
        if self.gate is not None:
            self.gate.admit(len(batch), self._cap)

    def xadd_args(self, fields: Fields) -> list[Any]:
        """The XADD command for ``fields`` as arguments (after :meth:`prepare`): trimmed
        (``MAXLEN ~``) for latest-only streams, untrimmed with lossless readers."""
        args: list[Any] = ["XADD", self.config.stream]
        if self.gate is None:
            args += ["MAXLEN", "~", self._cap]
        args.append("*")
        for key, value in fields.items():
            args += [key, value]
        return args

    def close(self) -> None:
        """Close the entries' connection."""
        self.link.close()

    @property
    def on_reconnect(self) -> Callable[[], None] | None:
        """What to run before a retry on a new connection (re-create lost groups)."""
        return self.gate.recreate_reader_groups if self.gate is not None else None
