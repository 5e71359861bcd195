"""Taking over a dead replica's messages.

Guarantee: an entry that another consumer of the same group read but did not acknowledge
for ``claim_idle_ms`` (its replica died, or hangs) is claimed by a live replica with
``XAUTOCLAIM`` and handled there, so a replica that is never restarted loses nothing. The
runtime claims about every ``claim_idle_ms / 2`` (at least every 0.5 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from procgraph.transport.reader import Entry, GroupReader


def claim_idle(reader: GroupReader, min_idle_ms: int,
               count: int = 100) -> list[tuple[str, Entry]]:
    """Take over entries another consumer left pending longer than ``min_idle_ms``."""
    out: list[tuple[str, Entry]] = []
    for spec in reader.specs.values():
        reply = reader.call(
            lambda s=spec: reader.client.xautoclaim(  # type: ignore[misc]
                s.stream, s.group, reader.consumer, min_idle_ms, "0-0", count=count
            ),
            "XAUTOCLAIM",
        )
        for entry_id, fields in reply[1]:
            if fields is not None:  # deleted (trimmed) entries come back as None
                out.append((spec.stream, (entry_id, fields)))
    return out
