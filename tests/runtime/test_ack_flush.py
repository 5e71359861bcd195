"""When acks are sent, in the real consume loop on a real broker: with the next read when it
comes soon (no round trip of their own), on their own once the oldest has waited
ACK_FLUSH_S (a chunk being handled slowly), and every entry acked in the end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis

from pgtest_util import hosted_replica, sink_graph, wait_for
from procgraph import codec
from procgraph.runtime.consume import ACK_FLUSH_S

AGENTS = '''
import time

from procgraph import Agent, Input
from pgtest_agents import Item


class Counts(Agent):
    """Counts what it handled, taking ``delay_s`` a message."""

    items = Input(Item)
    delay_s = 0.0

    def setup(self):
        self.handled = 0

    def on_items(self, m):
        time.sleep(Counts.delay_s)
        self.handled += 1
'''

def _stream(graph: str) -> str:
    return f"pg:{graph}:src:out"


def _send(client: redis.Redis, stream: str, count: int, gap_s: float = 0.0) -> None:
    from pgtest_agents import Item

    for n in range(count):
        client.xadd(stream, codec.encode(Item(n=n, key=f"k{n}")))
        time.sleep(gap_s)


def _counted_flushes(runner: Any) -> list[float]:
    """Record each ack flush of the replica's reader (the round trips of acks alone)."""
    reader = runner.readers[0]
    flushes: list[float] = []
    flush = reader.flush_acks

    def counted() -> None:
        flushes.append(time.monotonic())
        flush()

    reader.flush_acks = counted
    return flushes


def test_acks_of_a_paced_input_go_with_the_reads(valkey: Any, tmp_path: Path) -> None:
    """One message every 20 ms: each handled message's ack goes out with the read that
    follows it at once; none is sent in a round trip of its own (the HMI's and the join's
    inputs, at a line's rate, used to pay one every 50 ms)."""
    client = redis.Redis.from_url(valkey.url)
    graph = sink_graph(tmp_path, "acks", AGENTS, "Counts")
    with hosted_replica(graph, "sink", valkey.url) as runner:
        wait_for(lambda: hasattr(runner.agent, "handled"), 10, "the replica set up")
        flushes = _counted_flushes(runner)
        _send(client, _stream("acks"), 40, gap_s=0.02)
        wait_for(lambda: runner.agent.handled == 40, 20, "all 40 handled")
        wait_for(lambda: client.xpending(_stream("acks"), "sink")["pending"] == 0, 5,
                 "all acked")
        # none in a quiet run; a loaded machine may bunch two messages into one read now
        # and then (the old rule flushed every 50 ms: about 16 times here)
        assert len(flushes) <= 3, flushes


def test_acks_of_a_chunk_handled_slowly_are_sent_after_each_call(valkey: Any,
                                                                    tmp_path: Path) -> None:
    """5 messages read in one chunk, 0.3 s each: the next read is 1.5 s away, so each ack
    is sent as soon as its call returns (a call that took over ACK_FLUSH_S), not with the
    next call's: a replica killed mid-chunk gets again only the entry it was handling."""
    client = redis.Redis.from_url(valkey.url)
    # a module name of its own: the paced test's module (no delay) is imported already
    graph = sink_graph(tmp_path, "ackslow",
                       AGENTS.replace("delay_s = 0.0", "delay_s = 0.3"), "Counts")
    stream = _stream("ackslow")
    _send(client, stream, 5)
    with hosted_replica(graph, "sink", valkey.url) as runner:
        for done in (1, 3):
            wait_for(lambda d=done: getattr(runner.agent, "handled", 0) >= d, 20,
                     f"{done} handled")
            time.sleep(0.1)  # the ack's round trip is done; the next call is under way
            assert runner.agent.handled == done
            assert client.xpending(stream, "sink")["pending"] == 5 - done
        wait_for(lambda: runner.agent.handled == 5, 20, "all 5 handled")
        wait_for(lambda: client.xpending(stream, "sink")["pending"] == 0, 5, "all acked")
    assert ACK_FLUSH_S < 0.3
