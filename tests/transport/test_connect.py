"""connect(): a client that is dropped closes its sockets at once (not left to the garbage
collector, whose order made an unclosed-socket warning land in whatever test ran next)."""

from __future__ import annotations

import gc
import sys
from typing import Any

from procgraph.transport.connect import connect, connections_made


def test_a_dropped_client_closes_its_sockets(valkey: Any) -> None:
    unraisable: list[str] = []
    hook, sys.unraisablehook = sys.unraisablehook, lambda u: unraisable.append(repr(u))
    try:
        for _ in range(100):
            client = connect(valkey.url)
            client.xadd("cn:s", {"n": 1})
            assert connections_made(client) == 1
            del client
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert unraisable == []
