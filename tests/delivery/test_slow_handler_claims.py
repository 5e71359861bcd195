"""Issue 8 item 4: a handler call longer than ``claim_idle_ms`` doubles nothing.

On main, one slow call made the replica take back (XAUTOCLAIM) the entries it had itself read
ahead, and a sibling took the entries in the slow replica's hand: ~70 duplicates for a 35 s
call under the 30 s default. Here the same with ``claim_idle_ms`` at its minimum and calls of
1.5 s (the ratio is what matters).
"""

from __future__ import annotations

import time

import redis

from pgtest_agents import keys as _keys
from pgtest_agents import seen as _seen
from pgtest_util import wait_for


def _handled(client: redis.Redis) -> int:
    return int(client.get("pgtest:sink:handled") or 0)


def _run(run_graph, url: str, replicas: int) -> tuple[int, int]:
    client = redis.Redis.from_url(url)
    graph = f"""
name: slowclaim
brokers: {{main: {{url: embedded}}}}
agents:
  src: {{class: "pgtest_agents:Numbers", params: {{count: 200}}}}
  sink: {{class: "pgtest_agents:Recorder", inputs: {{items: src.out}}, replicas: {replicas},
         claim_idle_ms: 100, params: {{slow_at: [3, 90], slow_at_ms: 1500}}}}
"""
    with run_graph(graph, redis_url=url):
        wait_for(lambda: _seen(client, "sink") == _keys(200), 30, "all 200 items handled")
        time.sleep(1.0)  # a late claim would show up as extra deliveries now
        return len(_seen(client, "sink")), _handled(client)


def test_slow_handler_does_not_reclaim_its_own_read_ahead(valkey, run_graph):
    """One replica, two calls of 1.5 s with claim_idle_ms 100: each item handled once."""
    unique, handled = _run(run_graph, valkey.url, replicas=1)
    assert (unique, handled) == (200, 200)


def test_sibling_does_not_take_a_slow_replicas_entries(valkey, run_graph):
    """Two replicas, one busy 1.5 s at a time: its sibling takes none of its entries."""
    unique, handled = _run(run_graph, valkey.url, replicas=2)
    assert (unique, handled) == (200, 200)
