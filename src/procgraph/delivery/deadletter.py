"""Dead letters: an entry that cannot be handled is moved aside, never dropped silently.

Guarantee: an entry that does not decode, whose handler failed ``max_deliveries`` times, or
that crashed or hung its process that often (see :mod:`procgraph.delivery.recovery`) is
appended to ``<stream>:dead`` (capped at about 10,000 entries) with its original fields plus
``dead:reason``, ``dead:agent``, ``dead:source_id`` and ``dead:stream``, and acknowledged in
the same round trip, so the line goes on with the next entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from procgraph.constants import dead_letter_key
from procgraph.edges import xack_counted

if TYPE_CHECKING:
    from procgraph.transport.reader import Entry, GroupReader

#: the dead-letter stream of each input stream keeps about this many entries
DEAD_LETTER_MAXLEN = 10_000


def dead_letter(reader: GroupReader, stream: str, entry: Entry, reason: str,
                agent: str) -> None:
    """Move an entry to ``<stream>:dead`` with the reason, then acknowledge it."""
    entry_id, fields = entry
    record: dict[bytes, bytes] = dict(fields)
    record[b"dead:reason"] = reason.encode()
    record[b"dead:agent"] = agent.encode()
    record[b"dead:source_id"] = entry_id
    record[b"dead:stream"] = stream.encode()
    group = reader.specs[stream].group

    def move() -> None:
        pipe = reader.client.pipeline(transaction=False)
        pipe.xadd(dead_letter_key(stream), record,  # type: ignore[arg-type]
                  maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        xack_counted(pipe, stream, group, [entry_id])
        pipe.execute()

    reader.call(move, "dead-letter")
