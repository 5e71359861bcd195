"""procgraph.delivery.claims on a real broker: a dead replica's entries are taken over."""

from __future__ import annotations

import redis

from pgtest_agents import keys as _keys
from pgtest_agents import seen as _seen
from pgtest_util import wait_for


def test_dead_replica_entries_are_claimed(broker, run_graph):
    """A replica that crashes and is never restarted: a peer takes over its entries."""
    client = redis.Redis.from_url(broker.url)
    graph = """
name: claim
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 400, rate_hz: 400}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out}, replicas: 2,
         restart: never, claim_idle_ms: 500, params: {crash_at: 150, slow_ms: 1}}
"""
    with run_graph(graph, redis_url=broker.url) as sup:
        wait_for(lambda: _seen(client, "sink") >= _keys(400) - {"k150"}, 40,
                 "the surviving replica to handle everything")
        wait_for(lambda: "k150" in _seen(client, "sink"), 20, "the crash entry to be claimed")
        dead = [r for r in sup.replicas if r.agent.name == "sink" and r.finished]
        assert len(dead) == 1 and dead[0].pid is None
