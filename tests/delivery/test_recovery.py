"""procgraph.delivery.recovery on a real broker: kill -9, crash loops and hangs lose nothing
and dead-letter only the entry that kills the replica."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import redis

from pgtest_agents import keys as _keys
from pgtest_agents import seen as _seen
from pgtest_util import wait_for


def test_kill_9_replica_loses_nothing(broker, run_graph):
    client = redis.Redis.from_url(broker.url)
    graph = """
name: crash
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 1500, rate_hz: 600}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out}, replicas: 2,
         params: {slow_ms: 3}}
"""
    with run_graph(graph, redis_url=broker.url) as sup:
        wait_for(lambda: int(client.get("pgtest:sink:handled") or 0) > 200, 20, "progress")
        victim = next(r for r in sup.replicas if r.agent.name == "sink" and r.index == 0)
        pid = victim.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: victim.restarts >= 1 and victim.pid not in (None, pid), 20,
                 "the killed replica to be restarted")
        wait_for(lambda: _seen(client, "sink") == _keys(1500), 40, "all 1500 items handled")
    assert int(client.get("pgtest:sink:handled")) >= 1500


def test_entry_that_crashes_the_process_is_dead_lettered(broker, run_graph):
    """A handler that kills its process on one entry: after max_deliveries restarts the
    entry goes to the dead-letter stream and the rest is handled."""
    client = redis.Redis.from_url(broker.url)
    graph = """
name: crashloop
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 20}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out}, max_deliveries: 2,
         params: {crash_always_at: 5}}
"""
    with run_graph(graph, redis_url=broker.url):
        wait_for(lambda: _seen(client, "sink") == _keys(20) - {"k5"}, 60, "all but k5")
        wait_for(lambda: client.xlen("pg:crashloop:src:out:dead") == 1, 30, "k5 dead-lettered")
    (_, fields), = client.xrange("pg:crashloop:src:out:dead")
    assert b"crashed or hung the process" in fields[b"dead:reason"]


def test_hung_replica_is_restarted_and_its_entry_dead_lettered(valkey, run_graph):
    """A handler stuck forever stops the heartbeat: the supervisor kills and restarts the
    replica; the entry that hangs it twice goes to the dead letters; the rest is handled."""
    client = redis.Redis.from_url(valkey.url)
    graph = """
name: hang
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 30}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out}, heartbeat_timeout_s: 2,
         max_deliveries: 2, params: {hang_at: 10}}
"""
    with run_graph(graph, redis_url=valkey.url) as sup:
        wait_for(lambda: _seen(client, "sink") == _keys(30) - {"k10"}, 60, "all but k10")
        wait_for(lambda: client.xlen("pg:hang:src:out:dead") == 1, 30, "k10 dead-lettered")
        sink = next(r for r in sup.replicas if r.agent.name == "sink")
        assert sink.restarts >= 2
    log = (Path(sup.plan.file).parent / "supervisor.log").read_text()
    assert "heartbeat stopped" in log
