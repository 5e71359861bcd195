"""Batch cutting and write-behind in the real consume loop (procgraph.runtime.consume), on a
real broker: a batch is cut as soon as the input is idle (not after ``max_wait_ms``), full
batches still form from a backlog, and outputs written behind the handler keep their order
and are acked only once written."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import redis

from pgtest_util import hosted_replica, sink_graph, wait_for
from procgraph import codec
from procgraph.graph import load_graph
from procgraph.runtime import AgentRunner

AGENTS = '''
from procgraph import Agent, Input, Output
from pgtest_agents import Item


class Sizes(Agent):
    """Records each batch's size; forwards every item."""

    items = Input(Item, batch=8, max_wait_ms=600_000)
    out = Output(Item)

    def on_items(self, msgs):
        self.context.redis().rpush("cut:sizes", len(msgs))
        for m in msgs:
            self.out.send(Item(n=m.n, key=m.key))


class Counting(Agent):
    """Keeps a running count in its state (its writes go in line, after the outputs)."""

    items = Input(Item, batch=8, max_wait_ms=600_000)
    out = Output(Item)

    def on_items(self, msgs):
        for m in msgs:
            self.out.send(Item(n=m.n, key=m.key))
        self.state.put("seen", self.state.get("seen", 0) + len(msgs))


class CountsParts(Agent):
    """Counts each item as a part and forwards it (its outputs are written behind)."""

    items = Input(Item)
    out = Output(Item)

    def on_items(self, m):
        self.context.count("parts:ok")
        self.out.send(Item(n=m.n, key=m.key))
'''

STREAM = "pg:cut:src:out"


def _graph(tmp_path: Path, agent: str) -> Path:
    return sink_graph(tmp_path, "cut", AGENTS, agent)


def _running(graph: Path, url: str) -> AbstractContextManager[AgentRunner]:
    return hosted_replica(graph, "sink", url)


def _send(client: redis.Redis, numbers: range) -> None:
    from pgtest_agents import Item

    for n in numbers:
        client.xadd(STREAM, codec.encode(Item(n=n, key=f"k{n}")))


def _out(client: redis.Redis) -> list[int]:
    from pgtest_agents import Item

    return [codec.decode(f, Item).n for _, f in client.xrange("pg:cut:sink:out")]


def test_a_lone_entry_is_handled_at_once_not_after_max_wait(valkey, tmp_path: Path) -> None:
    # max_wait_ms is 10 minutes: only cutting on an idle input hands these over in time
    client = redis.Redis.from_url(valkey.url)
    with _running(_graph(tmp_path, "Sizes"), valkey.url):
        _send(client, range(1))
        wait_for(lambda: _out(client) == [0], 20, "the lone entry handled")
        _send(client, range(1, 3))
        wait_for(lambda: _out(client) == [0, 1, 2], 20, "two more handled")
        wait_for(lambda: client.xpending(STREAM, "sink")["pending"] == 0, 20, "acks")
    sizes = [int(s) for s in client.lrange("cut:sizes", 0, -1)]
    assert sizes[0] == 1 and sum(sizes) == 3


def test_a_backlog_still_makes_full_batches_written_in_order(valkey, tmp_path: Path) -> None:
    client = redis.Redis.from_url(valkey.url)
    _send(client, range(40))  # waiting before the agent starts: read in one chunk
    with _running(_graph(tmp_path, "Sizes"), valkey.url):
        wait_for(lambda: len(_out(client)) == 40, 20, "40 entries handled")
        wait_for(lambda: client.xpending(STREAM, "sink")["pending"] == 0, 20, "all acked")
    sizes = [int(s) for s in client.lrange("cut:sizes", 0, -1)]
    assert sizes == [8] * 5
    assert _out(client) == list(range(40))  # written behind, in call order, none doubled


def test_a_handler_that_changes_its_state_gets_it_written(valkey, tmp_path: Path) -> None:
    client = redis.Redis.from_url(valkey.url)
    _send(client, range(20))
    with _running(_graph(tmp_path, "Counting"), valkey.url):
        wait_for(lambda: client.hget("pg:cut:state:sink:values", "seen") == b"20", 20,
                 "the state after 20 entries")
        wait_for(lambda: client.xpending(STREAM, "sink")["pending"] == 0, 20, "all acked")
    assert _out(client) == list(range(20))


@pytest.mark.parametrize("sent", [1, 100], ids=["in line", "behind"])
def test_outputs_refused_end_the_replica_and_no_count_is_kept(valkey, tmp_path: Path,
                                                               sent: int) -> None:
    """A handler's outputs are refused (the output key is not a stream): written in line (one
    entry, nothing queued behind it) or behind the handler (a backlog), the replica ends with
    the broker's error, nothing is acked or dead-lettered (the entries are handled again
    after the restart), and what the call counted is not kept."""
    client = redis.Redis.from_url(valkey.url)
    client.set("pg:cut:sink:out", "not a stream")
    runner = AgentRunner(load_graph(_graph(tmp_path, "CountsParts")), "sink", 0,
                         {"main": valkey.url})
    ended: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:  # the replica ends with the write's error
            ended.append(exc)

    _send(client, range(sent))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "the replica goes on after its outputs could not be written"
    assert [type(e).__name__ for e in ended] == ["ResponseError"], ended
    counts = runner.agent.context.line_counts
    assert counts.total == {} and counts.take() == {}
    [group] = client.xinfo_groups(STREAM)
    assert group["pending"] >= 1 and group["pending"] == group["entries-read"]  # none acked
    assert not [k for k in client.keys("*") if b"dead" in k]  # nothing dead-lettered
