"""Delivery guarantees on a real broker (Valkey and Redis): fan-out, load balancing,
crash recovery, poison messages, broker restart, backpressure."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import redis

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker


def _seen(client: redis.Redis, agent: str) -> set[str]:
    return {k.decode() for k in client.smembers(f"pgtest:{agent}:seen")}


def _keys(count: int) -> set[str]:
    return {f"k{n}" for n in range(count)}


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


def test_reader_started_after_its_producer_misses_nothing(valkey, tmp_path):
    """Without a supervisor (containers, Kubernetes) a producer may start first: it creates
    its lossless readers' groups before its first entry."""
    import shutil
    import subprocess
    import sys

    client = redis.Redis.from_url(valkey.url)
    shutil.copy(Path(__file__).parent / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    graph = tmp_path / "late.yaml"
    graph.write_text("""
name: late
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 50}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out}}
""")

    def start(agent: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "procgraph", "agent", str(graph), agent,
                                 "0", "--broker", f"main={valkey.url}"])

    src = start("src")
    try:
        wait_for(lambda: client.get("pgtest:src:done"), 30, "the producer to finish")
        sink = start("sink")
        try:
            wait_for(lambda: _seen(client, "sink") == _keys(50), 30, "all 50 items")
        finally:
            sink.terminate()
            assert sink.wait(15) == 0
    finally:
        src.terminate()
        src.wait(15)


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


def test_backpressure_on_lossless_edge_trims_nothing_unread(broker, run_graph):
    client = redis.Redis.from_url(broker.url)
    graph = """
name: bp
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 1500, payload_bytes: 100},
        outputs: {out: {maxlen: 100}}}
  slow: {class: "pgtest_agents:Recorder", inputs: {items: src.out}, params: {slow_ms: 2}}
  preview: {class: "pgtest_agents:Recorder", params: {slow_ms: 20},
            inputs: {items: {from: src.out, policy: latest}}}
"""
    lengths: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            lengths.append(int(client.xlen("pg:bp:src:out")))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    with run_graph(graph, redis_url=broker.url):
        watcher.start()
        try:
            wait_for(lambda: _seen(client, "slow") == _keys(1500), 60, "lossless reader: all")
        finally:
            stop.set()
            watcher.join()
    # the producer was held back: the stream never grew far past its cap
    assert max(lengths) <= 100 + 110, max(lengths)
    # the latest-policy preview reader was allowed to miss entries and did
    assert len(_seen(client, "preview")) < 1500


def test_check_command_reports_heartbeats(valkey, run_graph):
    import subprocess
    import sys

    graph = """
name: chk
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 5}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out}, replicas: 2}
"""

    def check(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "procgraph", "check", str(graph_file),
                               "--redis", valkey.url, *args], capture_output=True, text=True)

    with run_graph(graph, redis_url=valkey.url) as sup:
        graph_file = sup.plan.file
        client = redis.Redis.from_url(valkey.url)
        wait_for(lambda: len(client.keys("pg:chk:hb:*")) == 3, 30, "three heartbeats")
        ok = check()
        assert ok.returncode == 0 and "3 replica(s) alive" in ok.stdout, ok.stdout
        assert check("--agent", "sink", "--replica", "1").returncode == 0
        assert check("--agent", "nope").returncode == 1
    # everything stopped: the heartbeats expire, the check fails
    wait_for(lambda: not client.keys("pg:chk:hb:*"), 15, "heartbeats to expire")
    down = check("--agent", "sink")
    assert down.returncode == 1 and "sink[0]" in down.stdout and "sink[1]" in down.stdout
