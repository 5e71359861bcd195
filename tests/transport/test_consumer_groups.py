"""Consumer groups on a real broker (Valkey and Redis): fan-out between agents, load
balancing between replicas, and a broker restart survived."""

from __future__ import annotations

import time

import redis

from pgtest_agents import keys as _keys
from pgtest_agents import seen as _seen
from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker


def test_fan_out_and_load_balancing(broker, run_graph):
    client = redis.Redis.from_url(broker.url)
    graph = """
name: fanout
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 300}}
  a: {class: "pgtest_agents:Recorder", inputs: {items: src.out}, replicas: 2,
      params: {slow_ms: 2}}
  b: {class: "pgtest_agents:Recorder", inputs: {items: src.out}}
"""
    with run_graph(graph, redis_url=broker.url):
        wait_for(lambda: len(_seen(client, "a")) == 300 and len(_seen(client, "b")) == 300,
                 30, "both readers to see all 300 items")
    # fan-out: each reading agent got every message; load balancing: both replicas worked
    by = {k.decode(): int(v) for k, v in client.hgetall("pgtest:a:by").items()}
    assert set(by) == {"a-0", "a-1"}, by
    assert all(v > 0 for v in by.values()), by
    assert sum(by.values()) >= 300
    assert _seen(client, "b") == _keys(300)


def test_broker_restart_is_survived(run_graph, tmp_path):
    broker = EmbeddedBroker()
    broker.start()
    port = broker.port
    try:
        client = redis.Redis(port=port)
        graph = """
name: restart
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 100000, rate_hz: 200}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out}}
"""
        with run_graph(graph, redis_url=broker.url) as sup:
            wait_for(lambda: len(_seen(client, "sink")) > 50, 20, "progress before restart")
            broker.kill()
            broker.close()
            time.sleep(1.0)  # the broker stays away for a second
            broker = EmbeddedBroker(port=port)
            broker.start()
            client = redis.Redis(port=port)
            # all state was lost with the broker; the line must resume by itself
            wait_for(lambda: len(_seen(client, "sink")) > 50, 30, "progress after restart")
            assert all(r.pid is not None for r in sup.replicas)
    finally:
        broker.close()
