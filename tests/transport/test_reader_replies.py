"""GroupReader parses the broker's raw replies itself (it reads on a Link, not through
redis-py's reply callbacks): RESP2 and RESP3 alike, and an entry deleted after it was
delivered reads back with no fields (so it can be dead-lettered, not crash the reader)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from procgraph.transport.connect import connect
from procgraph.transport.reader import GroupReader, ReadSpec


@pytest.mark.parametrize("protocol", [2, 3])
def test_new_pending_and_deleted_entries_read_the_same_in_resp2_and_resp3(
        valkey: Any, protocol: int) -> None:
    admin = redis.Redis.from_url(valkey.url)
    stream = f"rr:{protocol}"
    client = connect(f"{valkey.url}?protocol={protocol}")
    reader = GroupReader(client, [ReadSpec(stream, "g", "items", "0")], "g-0",
                         threading.Event())
    try:
        reader.ensure_groups()
        ids = [admin.xadd(stream, {b"n": str(n).encode(), b"pad": b"x" * n}) for n in range(3)]
        got = reader.read(2, None)
        assert [(s, e[0], e[1]) for s, e in got] == [
            (stream, ids[0], {b"n": b"0", b"pad": b""}),
            (stream, ids[1], {b"n": b"1", b"pad": b"x"})]
        admin.xdel(stream, ids[1])  # delivered, then deleted: pending with no fields
        pending = reader.read(10, None, pending=True)
        assert [(e[0], e[1]) for _, e in pending] == [(ids[0], {b"n": b"0", b"pad": b""}),
                                                     (ids[1], {})]
        later = reader.read(10, 50)
        assert [(e[0], e[1]) for _, e in later] == [(ids[2], {b"n": b"2", b"pad": b"xx"})]
        assert reader.read(10, 50) == []  # BLOCK ran out: nothing, not an error
    finally:
        reader.close()
        client.close()
