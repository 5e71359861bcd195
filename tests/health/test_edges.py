"""procgraph.health.edge_stats on real Valkey and Redis: entries dropped by ``latest``
trimming, unread and read per consumer group, compared with the truth a test producer and a
slow reader know; and the figures ``procgraph top`` shows per edge."""

from __future__ import annotations

import re

import pytest
import redis

from procgraph.brokers import EmbeddedBroker
from procgraph.graph import load_graph
from procgraph.health import (
    add_line_counter,
    count_read,
    create_group_counted,
    edge_stats,
    edges_key,
)
from procgraph.monitor import Row


@pytest.fixture
def client(broker: EmbeddedBroker) -> redis.Redis:
    return redis.Redis.from_url(broker.url)


def _slow_reader(client: redis.Redis, stream: str, group: str, n: int, every: int,
                 count: int, maxlen: int) -> int:
    """Add ``n`` entries capped at ``maxlen`` (~); read ``count`` every ``every``: got."""
    got = 0
    for i in range(n):
        client.xadd(stream, {"i": i}, maxlen=maxlen, approximate=True)
        if i % every == every - 1:
            reply = client.xreadgroup(group, "c", {stream: ">"}, count=count)
            entries = [e for _, es in reply for e in es]
            got += len(entries)
            count_read(client, stream, group, len(entries))
            if entries:
                client.xack(stream, group, *[e[0] for e in entries])
    return got


def _truth_unread(client: redis.Redis, stream: str, group: str) -> int:
    last = next(g for g in client.xinfo_groups(stream) if g["name"] == group.encode())
    return len(client.xrange(stream, "(" + last["last-delivered-id"].decode()))


def test_a_slow_latest_reader_counts_what_trimming_dropped(client: redis.Redis) -> None:
    client.xadd("s", {"before": 1})  # before the group: neither read nor dropped
    assert create_group_counted(client, "s", "slow")
    n = 2000
    got = _slow_reader(client, "s", "slow", n, every=25, count=2, maxlen=20)
    unread = _truth_unread(client, "s", "slow")
    stats = edge_stats(client, ["s"])[("s", "slow")]
    assert stats.read == got and stats.unread == unread and stats.pending == 0
    assert stats.dropped == n - got - unread
    assert stats.dropped > 0.8 * n  # the reader got ~8%: the rest was dropped, and now says so
    assert stats.added == n + 1


def test_a_reader_that_keeps_up_drops_nothing(client: redis.Redis) -> None:
    assert create_group_counted(client, "s", "fast")
    assert create_group_counted(client, "s", "late")  # never reads: unread until trimmed
    got = _slow_reader(client, "s", "fast", 300, every=10, count=10, maxlen=10_000)
    stats = edge_stats(client, ["s"])
    assert got == 300
    assert stats[("s", "fast")].dropped == 0 and stats[("s", "fast")].unread == 0
    assert stats[("s", "late")].dropped == 0 and stats[("s", "late")].unread == 300


def test_a_reader_in_the_middle_of_the_stream_has_exact_unread(client: redis.Redis) -> None:
    """No trimming: the group's position is inside the stream (exact count on both servers)."""
    assert create_group_counted(client, "s", "g")
    for i in range(50):
        client.xadd("s", {"i": i})
    reply = client.xreadgroup("g", "c", {"s": ">"}, count=17)
    count_read(client, "s", "g", len(reply[0][1]))
    stats = edge_stats(client, ["s"])[("s", "g")]
    assert (stats.unread, stats.pending, stats.read, stats.dropped) == (33, 17, 17, 0)


def test_group_made_from_zero_counts_entries_trimmed_before_it_read(client: redis.Redis
                                                                    ) -> None:
    for i in range(500):
        client.xadd("s", {"i": i}, maxlen=10, approximate=True)
    length = client.xlen("s")
    assert create_group_counted(client, "s", "g", start="0")  # after a broker restart
    stats = edge_stats(client, ["s"])[("s", "g")]
    assert stats.unread == length and stats.dropped == 0  # trimmed before it existed


def test_an_existing_group_keeps_its_counters(client: redis.Redis) -> None:
    assert create_group_counted(client, "s", "g")
    count_read(client, "s", "g", 5)
    assert not create_group_counted(client, "s", "g")
    assert client.hget(edges_key("s"), "g:read") == b"5"
    with pytest.raises(redis.ResponseError):
        client.set("not-a-stream", 1)
        create_group_counted(client, "not-a-stream", "g")


def test_without_the_runtime_counters_dropped_is_unknown_or_exact(client: redis.Redis) -> None:
    """A group made by someone else: Redis 7.0's lag still tells the skipped entries, Valkey's
    does not (None), never a wrong figure."""
    client.xgroup_create("s", "g", id="$", mkstream=True)
    client.xadd("s", {"i": -1})
    got = 0
    for i in range(1000):
        client.xadd("s", {"i": i}, maxlen=10, approximate=True)
        if i % 50 == 0:
            got += sum(len(es) for _, es in client.xreadgroup("g", "c", {"s": ">"}, count=1))
    stats = edge_stats(client, ["s"])[("s", "g")]
    assert stats.read is None
    assert stats.unread == _truth_unread(client, "s", "g")
    if stats.dropped is not None:
        assert stats.dropped == 1001 - got - stats.unread


def test_missing_streams_are_left_out(client: redis.Redis) -> None:
    assert edge_stats(client, []) == {}
    assert edge_stats(client, ["nope"]) == {}


def test_top_shows_drop_and_reclaim_columns_and_line_counters(
        client: redis.Redis, tmp_path: object) -> None:
    from pathlib import Path

    from rich.console import Console

    from procgraph.cli.top_cmd import render
    graph = Path(str(tmp_path)) / "g.yaml"
    graph.write_text("name: tg\nagents:\n  counter: {class: 'procgraph.examples:Counter'}\n")
    plan = load_graph(graph)
    add_line_counter(client, "tg", "broker_data_lost")
    rows = [Row("hmi", 1, 1, 0, "in:previews", count=10, lag=0, pending=0, dead=0,
                dropped=9_500, reclaimed=3)]
    console = Console(width=200, record=True)
    console.print(render(plan, rows, plain=True, counters={"broker_data_lost": 1}))
    out = console.export_text()
    assert all(c in out for c in ("dead", "drop", "recl", "p50ms"))
    assert re.search(r"in:previews\s+10\s+-\s+0\s+0\s+0\s+9,500\s+3\s", out), out
    assert "line counters: broker_data_lost=1" in out
