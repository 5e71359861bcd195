"""The supervisor reads heartbeats through procgraph.health and kills a replica that hangs."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import redis

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.graph import load_graph
from procgraph.health import Heartbeat, clear_heartbeat, write_heartbeat
from procgraph.supervisor import Replica, Supervisor

GRAPH = """
name: sup
brokers: {main: {url: embedded}}
agents:
  counter: {class: "procgraph.examples:Counter"}
"""


def test_a_replica_whose_heartbeat_stops_is_killed(valkey: EmbeddedBroker,
                                                   tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(GRAPH)
    plan = load_graph(tmp_path / "g.yaml")
    out = io.StringIO()
    sup = Supervisor(plan, redis_url=valkey.url, out=out, colour=False)
    sup.start_brokers()
    assert sup.urls == {"main": valkey.url} and not sup.brokers  # --redis: nothing started
    client = redis.Redis.from_url(valkey.url)
    # a stand-in replica process: a real one, but one that never writes a heartbeat itself
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    replica = Replica(plan.agents["counter"], 0, proc=proc)
    sup.replicas.append(replica)
    try:
        sup._check_heartbeats()
        assert not replica.heartbeat_seen and proc.poll() is None  # never seen: left alone
        now = time.time()
        write_heartbeat(client, Heartbeat(graph="sup", agent="counter", replica=0, pid=proc.pid,
                                          started=now, ts=now))
        sup._check_heartbeats()
        assert replica.heartbeat_seen and proc.poll() is None
        clear_heartbeat(client, "sup", "counter", 0)
        sup._check_heartbeats()
        wait_for(lambda: proc.poll() is not None, 5, "the hung replica to be killed")
        assert "counter[0]: heartbeat stopped; killing pid" in out.getvalue()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for c in sup.line.clients.values():
            c.close()
        client.close()
