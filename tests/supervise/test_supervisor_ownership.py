"""One line, one owner: a second run is refused; a manual agent replica is checked first."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from supervise_util import Run, env, write_graph

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.graph import load_graph
from procgraph.health import read_heartbeats
from procgraph.lease import LineHeld
from procgraph.supervisor import Supervisor

GRAPH = """
name: owned
brokers: {main: {url: embedded}}
agents:
  counter: {class: "procgraph.examples:Counter", params: {rate_hz: 20}}
  printer: {class: "procgraph.examples:Printer", inputs: {items: counter.out}, replicas: 2}
"""
STARTED = r"3 replica\(s\) of 2 agent\(s\) started"


def procgraph(*args: str, timeout_s: float = 20) -> tuple[int, str, float]:
    """Run a procgraph command; (exit code, stdout+stderr, seconds it took)."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "procgraph", *args], capture_output=True,
                          text=True, env=env(), timeout=timeout_s)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


def assert_refused(code: int, out: str, first: Run) -> None:
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 1, out
    assert len(errors) == 1, out
    assert f"pid {first.proc.pid}" in errors[0], out
    assert "started" in errors[0] and "host" in errors[0], out
    assert "stop it" in errors[0], out
    assert "Traceback" not in out


@pytest.mark.slow
def test_a_second_run_of_the_same_graph_is_refused(tmp_path: Path) -> None:
    graph = write_graph(tmp_path, GRAPH)
    first = Run(graph, state_dir=tmp_path / "state")
    try:
        first.wait_line(STARTED)
        code, out, took = procgraph("run", str(graph), "--state-dir", str(tmp_path / "state"),
                                    "--duration", "5")
        assert took < 10, out  # the interpreter's start included (slow on a loaded machine)
        assert_refused(code, out, first)
        # the refusal itself, without the interpreter's start: well under 2 s
        second = Supervisor(load_graph(graph), out=io.StringIO(), colour=False,
                            state_dir=tmp_path / "state")
        t0 = time.monotonic()
        with pytest.raises(LineHeld) as refused:
            second.run(5)
        assert time.monotonic() - t0 < 2, refused.value
        assert f"pid {first.proc.pid}" in str(refused.value)
        assert first.proc.poll() is None  # the first line runs on
    finally:
        first.stop()


@pytest.mark.slow
def test_a_second_run_on_the_same_broker_is_refused(tmp_path: Path,
                                                    valkey: EmbeddedBroker) -> None:
    graph = write_graph(tmp_path, GRAPH)
    first = Run(graph, "--redis", valkey.url, state_dir=tmp_path / "a")
    try:
        first.wait_line(STARTED)
        code, out, _ = procgraph("run", str(graph), "--redis", valkey.url,
                                 "--state-dir", str(tmp_path / "b"), "--duration", "5")
        assert_refused(code, out, first)
    finally:
        first.stop()
    # once the first line has stopped, its lease is gone: a new run starts at once
    code, out, _ = procgraph("run", str(graph), "--redis", valkey.url,
                             "--state-dir", str(tmp_path / "b"), "--duration", "1")
    assert code == 0, out


def test_agent_refuses_a_replica_index_outside_replicas(tmp_path: Path) -> None:
    graph = write_graph(tmp_path, GRAPH)
    for index in ("2", "-1"):
        code, out, _ = procgraph("agent", "--broker", "main=redis://127.0.0.1:1", "--",
                                 str(graph), "printer", index)
        assert code == 1, out
        assert "error: " in out and "0..1" in out, out
        assert "Traceback" not in out


@pytest.mark.slow
def test_agent_refuses_a_replica_that_is_alive(tmp_path: Path) -> None:
    graph = write_graph(tmp_path, GRAPH)
    first = Run(graph, state_dir=tmp_path / "state")
    try:
        url = first.wait_line(r"embedded valkey at (redis://\S+)").group(1)
        first.wait_line(STARTED)
        client = redis.Redis.from_url(url)
        try:  # printer[1] is up and beating (slow to start on a loaded machine)
            wait_for(lambda: ("printer", 1) in read_heartbeats(client, "owned"), 30,
                     "the heartbeat of printer[1]")
        finally:
            client.close()
        code, out, _ = procgraph("agent", str(graph), "printer", "1", "--broker", f"main={url}")
        assert code == 1, out
        assert "error: " in out and "printer[1]" in out and "alive" in out, out
        assert "pid" in out and "Traceback" not in out, out
    finally:
        first.stop()
