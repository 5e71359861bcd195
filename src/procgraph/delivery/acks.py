"""Acknowledgements: an entry is acknowledged only after it was handled.

Guarantee (at-least-once): the runtime queues an entry's XACK only once its handler returned
and the handler's outputs (and state) were written; queued acks are sent in the same round
trip as the next read, or by a flush (at shutdown, and after each entry re-handled alone
after a restart). An entry read but never acked stays pending in the broker and is delivered
again (to this consumer after a restart, or to a peer by :mod:`procgraph.delivery.claims`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from procgraph.edges import xack_commands


class AckQueue:
    """Acks of handled entries, by stream, waiting to be sent with the next read.

    Thread-safe: the handler thread queues, the prefetching reader thread sends.
    """

    def __init__(self) -> None:
        self._acks: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        #: when the queue was last taken (by a read, which sends them along, or a flush)
        self._taken = time.monotonic()

    def add(self, stream: str, entry_id: bytes) -> None:
        """Queue the acknowledgement of one handled entry."""
        with self._lock:
            self._acks.setdefault(stream, []).append(entry_id)

    def take(self) -> dict[str, list[bytes]]:
        """Everything queued so far (the queue is left empty)."""
        with self._lock:
            acks, self._acks = self._acks, {}
            self._taken = time.monotonic()
        return acks

    def due(self, every_s: float) -> bool:
        """Whether acks are queued and none were sent for ``every_s`` seconds."""
        with self._lock:
            return bool(self._acks) and time.monotonic() - self._taken >= every_s


def queue_xacks(pipe: Any, acks: dict[str, list[bytes]], group_of: dict[str, str]) -> int:
    """Add the XACKs of every stream to ``pipe``, each counted for the edge's figures
    (:func:`procgraph.edges.xack_counted`); returns how many commands were added."""
    commands = xack_commands_for(acks, group_of)
    for command in commands:
        pipe.execute_command(*command)
    return len(commands)


def xack_commands_for(acks: dict[str, list[bytes]],
                      group_of: dict[str, str]) -> list[tuple[Any, ...]]:
    """The commands of :func:`queue_xacks`, as argument tuples (for a
    :class:`procgraph.transport.link.Link`)."""
    return [command for stream, ids in acks.items()
            for command in xack_commands(stream, group_of[stream], ids)]
