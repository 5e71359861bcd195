"""Recovery after a restart: a replica re-handles its own pending entries, one at a time.

Guarantee: entries this consumer had read but not acknowledged before its process died are
handled again first, each alone and acknowledged at once, with an in-flight marker in the
broker (``constants.inflight_key``) naming the entry in hand. If the process dies again,
the next start finds the marker and counts a crash against that entry only (the entries read
with it are innocent) in ``constants.crashes_key``; an entry that crashed or hung the process
``max_deliveries`` times in all is dead-lettered instead of handled (a poison pill cannot
crash-loop a replica forever).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from procgraph.constants import crashes_key, inflight_key
from procgraph.delivery.deadletter import dead_letter
from procgraph.transport.retry import retry

if TYPE_CHECKING:
    from procgraph.transport.reader import Entry, GroupReader

log = logging.getLogger("procgraph.runtime")
#: how many own pending entries are fetched per round trip while recovering
READ_COUNT = 64


def recover_own_pending(
    reader: GroupReader,
    *,
    graph: str,
    agent: str,
    replica: int,
    max_deliveries: int,
    stop: threading.Event,
    handle_alone: Callable[[str, Entry], None],
    on_dead: Callable[[str], None],
) -> None:
    """Re-handle what this consumer had read but not acked before it restarted.

    ``handle_alone(stream, entry)`` handles one entry and acknowledges it before returning;
    ``on_dead(stream)`` counts an entry that was dead-lettered instead.
    """
    marker = inflight_key(graph, agent, replica)
    crashes = crashes_key(graph, agent)
    client = reader.client
    culprit = retry(lambda: client.get(marker), "read in-flight marker", stop)
    if culprit is not None:
        retry(lambda: client.hincrby(crashes, culprit, 1), "count crash", stop)
    announced = False
    while not stop.is_set():
        got = reader.read(READ_COUNT, 0, pending=True)
        if not got:
            break
        if not announced:
            announced = True
            log.info("re-handling pending entries left by an earlier run, one at a time")
        for stream, entry in got:
            if stop.is_set():
                break
            entry_id = entry[0]
            count = int(retry(lambda e=entry_id: client.hget(crashes, e) or 0,  # type: ignore[misc]
                              "read crash count", stop))
            if count + 1 >= max_deliveries:
                dead_letter(reader, stream, entry, f"the handler crashed or hung the process "
                            f"{count + 1} times on this entry", reader.consumer)
                on_dead(stream)
            else:
                retry(lambda e=entry_id: client.set(marker, e), "mark entry", stop)  # type: ignore[misc]
                handle_alone(stream, entry)
            if count:
                retry(lambda e=entry_id: client.hdel(crashes, e), "clear", stop)  # type: ignore[misc]
    retry(lambda: client.delete(marker), "clear in-flight marker", stop)
