"""procgraph.delivery.deadletter on a real broker: poison entries go to <stream>:dead, acked."""

from __future__ import annotations

import redis

from pgtest_agents import keys as _keys
from pgtest_agents import seen as _seen
from pgtest_util import wait_for


def test_poison_messages_go_to_dead_letter(broker, run_graph):
    client = redis.Redis.from_url(broker.url)
    graph = """
name: poison
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 50, rate_hz: 100}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out},
         params: {poison: [k7, k20]}, max_deliveries: 2}
"""
    stream = "pg:poison:src:out"
    with run_graph(graph, redis_url=broker.url) as sup:
        wait_for(lambda: client.exists(stream), 10, "the stream")
        client.xadd(stream, {b"h": b"{not json"})
        client.xadd(stream, {b"unrelated": b"x"})
        client.xadd(stream, {b"h": b'{"v":1,"type":"Item","data":{"n":"NaN?"},"arrays":{}}'})
        wait_for(lambda: client.xlen(stream + ":dead") >= 5, 20, "5 dead letters")
        wait_for(lambda: _seen(client, "sink") == _keys(50) - {"k7", "k20"}, 20, "the rest")
        sink = next(r for r in sup.replicas if r.agent.name == "sink")
        assert sink.restarts == 0, "the agent must survive poison messages"
    dead = client.xrange(stream + ":dead")
    reasons = [f[b"dead:reason"].decode() for _, f in dead]
    assert sum("handler on_items failed" in r for r in reasons) == 2
    assert sum(r.startswith("decode:") for r in reasons) == 3
    assert all(f[b"dead:agent"] == b"sink-0" for _, f in dead)
    # nothing left pending: the poison entries were acknowledged
    assert client.xpending(stream, "sink")["pending"] == 0
