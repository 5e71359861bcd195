"""Chaos on a user's own line: numbered source -> worker x2 -> sink counting what it gets
(tests/pgtest_agents.py: Numbers, Relay, Recorder). kill -9 of a worker mid-run: nothing is
lost; duplicates only from at-least-once redelivery of what the worker had in hand at the
kill (bounded by the read-ahead of one read, 64 entries, plus its handler batch)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
import redis

from pgtest_agents import keys, seen
from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.health import edge_stats

pytestmark = pytest.mark.slow

COUNT = 400
#: what one replica can hold un-acknowledged at a kill: one read (64) plus a handler call
IN_HAND = 64 + 1

LINE = f"""
name: chaosuser
agents:
  numbers: {{class: pgtest_agents:Numbers, params: {{count: {COUNT}, rate_hz: 200}}}}
  worker:
    class: pgtest_agents:Relay
    replicas: 2
    inputs: {{items: {{from: numbers.out, policy: lossless}}}}
    params: {{slow_ms: 4}}
  sink:
    class: pgtest_agents:Recorder
    inputs: {{items: {{from: worker.out, policy: lossless}}}}
"""


def test_kill_9_of_a_worker_loses_nothing(valkey: EmbeddedBroker,
                                          run_graph: Callable[..., object]) -> None:
    client = redis.Redis.from_url(valkey.url)
    with run_graph(LINE, redis_url=valkey.url) as sup:  # type: ignore[attr-defined]
        wait_for(lambda: len(seen(client, "sink")) >= 80, 30, "the sink to get 80 items")
        victim = next(r for r in sup.replicas if r.agent.name == "worker" and r.index == 1)
        pid = victim.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: seen(client, "sink") >= keys(COUNT), 40, "every item at the sink")
        time.sleep(1.0)  # a duplicate, if any, arrives now
        handled = int(client.get("pgtest:sink:handled") or 0)
        stats = edge_stats(client, ["pg:chaosuser:numbers:out"])
    got = seen(client, "sink")
    lost, dup = len(keys(COUNT) - got), handled - len(got)
    print(f"CHAOS user line kill -9 worker: items={COUNT} lost={lost} duplicated={dup} "
          f"restarts={victim.restarts}")
    assert lost == 0 and got == keys(COUNT)
    assert 0 <= dup <= IN_HAND, f"{dup} duplicates, more than one replica holds at a kill"
    edge = stats[("pg:chaosuser:numbers:out", "worker")]
    assert edge.dropped in (0, None) and edge.unread == 0  # lossless: nothing trimmed unread
