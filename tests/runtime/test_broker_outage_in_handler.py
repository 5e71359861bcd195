"""A handler that meets an unreachable broker is retried, not dead-lettered (procgraph.runtime)."""

from __future__ import annotations

import redis

from pgtest_agents import keys as _keys
from pgtest_agents import seen as _seen
from pgtest_util import wait_for


def test_broker_errors_in_a_handler_do_not_count_as_failed_attempts(broker, run_graph):
    client = redis.Redis.from_url(broker.url)
    graph = """
name: outage
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 30, rate_hz: 200}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out}, max_deliveries: 1,
         params: {broker_down_at: [3, 17], broker_down_times: 3}}
"""
    stream = "pg:outage:src:out"
    with run_graph(graph, redis_url=broker.url):
        wait_for(lambda: _seen(client, "sink") == _keys(30), 30, "every item handled")
    # three "broker away" errors each, yet max_deliveries: 1 dead-lettered nothing
    assert client.xlen(stream + ":dead") == 0
    assert int(client.get("pgtest:sink:down:3")) == 4
    assert int(client.get("pgtest:sink:down:17")) == 4
