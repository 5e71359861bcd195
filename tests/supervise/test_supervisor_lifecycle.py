"""Replica lifecycle: heartbeat identity, a finite source, an unreachable broker at start."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from supervise_util import Run, env, write_graph

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker, free_port
from procgraph.graph import GraphPlan, load_graph
from procgraph.health import Heartbeat, read_heartbeats, write_heartbeat
from procgraph.supervisor import Replica, Supervisor

ONE = """
name: life
brokers: {main: {url: embedded}}
agents:
  counter: {class: "procgraph.examples:Counter"}
"""


def _beat(pid: int, replica: int = 0) -> Heartbeat:
    now = time.time()
    return Heartbeat(graph="life", agent="counter", replica=replica, pid=pid, started=now,
                     ts=now)


def test_an_old_heartbeat_never_condemns_a_new_process(valkey: EmbeddedBroker,
                                                       tmp_path: Path) -> None:
    """Item 6: the predecessor's leftover heartbeat is not the new replica's."""
    plan = load_graph(write_graph(tmp_path, ONE))
    out = io.StringIO()
    sup = Supervisor(plan, redis_url=valkey.url, out=out, colour=False,
                     state_dir=tmp_path / "state")
    sup.start_brokers()
    client = redis.Redis.from_url(valkey.url)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    replica = Replica(plan.agents["counter"], 0, proc=proc)
    sup.replicas.append(replica)
    try:
        write_heartbeat(client, _beat(pid=proc.pid + 100000))  # left by a dead predecessor
        sup._check_heartbeats()
        assert not replica.heartbeat_seen
        client.delete("pg:life:hb:counter:0")  # the leftover expires
        sup._check_heartbeats()
        time.sleep(0.3)
        assert proc.poll() is None, out.getvalue()
        assert "heartbeat stopped" not in out.getvalue()
    finally:
        proc.kill()
        proc.wait()
        for c in sup.line.clients.values():
            c.close()
        client.close()


def test_a_reaped_replicas_heartbeat_is_cleared(valkey: EmbeddedBroker, tmp_path: Path) -> None:
    plan = load_graph(write_graph(tmp_path, ONE.replace("Counter\"}", "Counter\", "
                                                        "restart: never}")))
    out = io.StringIO()
    sup = Supervisor(plan, redis_url=valkey.url, out=out, colour=False,
                     state_dir=tmp_path / "state")
    sup.start_brokers()
    client = redis.Redis.from_url(valkey.url)
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    sup.replicas.append(Replica(plan.agents["counter"], 0, proc=proc))
    try:
        write_heartbeat(client, _beat(pid=proc.pid))
        sup.poll()
        assert read_heartbeats(client, "life") == {}, out.getvalue()
    finally:
        for c in sup.line.clients.values():
            c.close()
        client.close()


FINITE = """
name: finite
brokers: {main: {url: embedded}}
agents:
  source: {class: "sv_agents:Finite", params: {count: 300}, restart: on-failure}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: source.out}}
"""


def _finite_run(plan: GraphPlan, client: redis.Redis, state: Path) -> str:
    """Run the finite line until the source is done and its 300 items are in; the log."""
    client.flushall()
    out = io.StringIO()
    sup = Supervisor(plan, redis_url=plan_url(client), out=out, colour=False, state_dir=state)
    sup.start_in_thread()
    try:
        wait_for(lambda: "source[0] exited" in out.getvalue(), 20, "the source to finish")
        wait_for(lambda: int(client.get("pgtest:sink:handled") or 0) >= 300, 20,
                 "300 deliveries")
        time.sleep(1.5)  # a restarted source would send again by now
    finally:
        sup.shutdown()
    return out.getvalue()


def plan_url(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}"


@pytest.mark.slow
def test_a_finite_source_is_delivered_exactly_once(valkey: EmbeddedBroker,
                                                   tmp_path: Path) -> None:
    """Item 5: a source that returns from run() exits 0, is not killed and not restarted."""
    plan = load_graph(write_graph(tmp_path, FINITE))
    client = redis.Redis.from_url(valkey.url)
    try:
        for attempt in range(2):
            log = _finite_run(plan, client, tmp_path / "state")
            assert "source[0] exited with code 0; not restarting" in log, log
            assert "heartbeat stopped" not in log, log
            assert int(client.get("pgtest:sink:handled") or 0) == 300, (attempt, log)
            assert client.scard("pgtest:sink:seen") == 300
    finally:
        client.close()


TWO = """
name: life
brokers: {main: {url: embedded}}
agents:
  counter: {class: "procgraph.examples:Counter"}
  printer: {class: "procgraph.examples:Printer", inputs: {items: counter.out}}
"""


def _unused_url() -> str:
    return f"redis://127.0.0.1:{free_port()}"


@pytest.mark.slow
def test_an_unreachable_broker_gives_up_after_connect_timeout(tmp_path: Path) -> None:
    graph = write_graph(tmp_path, TWO)
    url = _unused_url()
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "procgraph", "run", str(graph), "--redis", url,
                           "--state-dir", str(tmp_path / "s"), "--connect-timeout", "2"],
                          capture_output=True, text=True, env=env(), timeout=30)
    took = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and url in errors[0], out
    assert "Traceback" not in out
    assert took < 2 + 4, (took, out)


@pytest.mark.slow
def test_duration_holds_while_the_broker_is_unreachable(tmp_path: Path) -> None:
    graph = write_graph(tmp_path, TWO)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "procgraph", "run", str(graph), "--redis",
                           _unused_url(), "--state-dir", str(tmp_path / "s"), "--duration", "1"],
                          capture_output=True, text=True, env=env(), timeout=30)
    out = proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 1 + 4, out
    assert "Traceback" not in out


@pytest.mark.slow
def test_sigterm_while_waiting_for_the_broker_exits_cleanly(tmp_path: Path) -> None:
    graph = write_graph(tmp_path, TWO)
    run = Run(graph, "--redis", _unused_url(), state_dir=tmp_path / "s")
    try:
        run.wait_line(r"supervisor \| waiting for broker 'main' at redis://")
        time.sleep(0.5)
        assert run.proc.poll() is None, run.output
        os.kill(run.proc.pid, signal.SIGTERM)
        code = run.finish(5)
        assert code == 0, run.output
        assert "Traceback" not in run.output, run.output
        assert len(run.output.splitlines()) < 10, run.output
    finally:
        run.stop()
