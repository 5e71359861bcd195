"""Agents never outlive their supervisor: kill -9, SIGHUP, a broken stdout, SIGINT twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervise_util import Run, alive, cmdline, descendants, env, kill_pid, wait_gone, write_graph

GRAPH = """
name: survive
brokers: {main: {url: embedded}}
agents:
  counter: {class: "procgraph.examples:Counter", params: {rate_hz: 50}}
  printer: {class: "procgraph.examples:Printer", inputs: {items: counter.out},
            params: {every: 10}}
"""
STARTED = r"2 replica\(s\) of 2 agent\(s\) started"


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    return write_graph(tmp_path, GRAPH)


@pytest.fixture
def running(graph: Path, tmp_path: Path) -> Iterator[tuple[Run, dict[int, str]]]:
    """A running line and its family (2 replicas and the embedded broker at least)."""
    run = Run(graph, "--console-level", "info", state_dir=tmp_path / "state")
    family: dict[int, str] = {}
    try:
        run.wait_line(STARTED)
        run.wait_line(r"printer\[0\] \| .*got 10 items")
        family = {p: c for p, c in descendants(run.proc.pid).items()
                  if " agent " in c or "valkey-server" in c}
        assert len(family) >= 3, family
        yield run, family
    finally:
        run.stop()
        for pid, cmd in family.items():  # orphans this test made, if the fix failed
            if alive(pid) and cmdline(pid) == cmd:
                kill_pid(pid)


@pytest.mark.slow
def test_kill_9_of_the_supervisor_ends_every_replica_and_broker(
        running: tuple[Run, dict[int, str]], graph: Path, tmp_path: Path) -> None:
    run, family = running
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(5)
    left = wait_gone(family, 3.0)
    assert not left, f"orphans 3 s after kill -9 of the supervisor: {left}"
    again = Run(graph, state_dir=tmp_path / "state")  # a fresh run takes the line over
    try:
        again.wait_line(STARTED)
        assert "error:" not in again.output
    finally:
        again.stop()


@pytest.mark.slow
def test_sighup_stops_the_line_cleanly(running: tuple[Run, dict[int, str]]) -> None:
    run, family = running
    os.kill(run.proc.pid, signal.SIGHUP)
    code = run.finish(20)
    out = run.output
    assert code == 0, out
    assert "supervisor | SIGHUP: stopping" in out
    assert "broker 'main' stopped" in out
    assert "Traceback" not in out
    assert not wait_gone(family, 2.0)


@pytest.mark.slow
def test_sigint_twice_still_stops_everything(running: tuple[Run, dict[int, str]]) -> None:
    """GNU timeout sends SIGINT to the child and to its group: two at once, or many."""
    run, family = running
    for _ in range(2):
        os.kill(run.proc.pid, signal.SIGINT)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and run.proc.poll() is None:  # and more, while stopping
        os.kill(run.proc.pid, signal.SIGINT)
        time.sleep(0.001)
    code = run.finish(20)
    out = run.output
    assert code == 0, out
    assert "Traceback" not in out
    assert out.count("SIGINT: stopping") == 1, out
    assert not wait_gone(family, 2.0)


@pytest.mark.slow
def test_a_broken_stdout_pipe_does_not_crash_the_supervisor(graph: Path, tmp_path: Path) -> None:
    """``procgraph run ... | head -3``: the line runs its --duration and stops cleanly."""
    cmd = (f"{sys.executable} -m procgraph run {graph} --state-dir {tmp_path / 'state'} "
           f"--duration 4 2>{tmp_path / 'err'} | head -3; echo \"rc=${{PIPESTATUS[0]}}\"")
    proc = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, text=True, env=env(),
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    err = (tmp_path / "err").read_text()
    assert out.strip().endswith("rc=0"), out + err
    assert "Traceback" not in err, err
    time.sleep(0.5)
    left = [line for line in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True,
                                            text=True).stdout.splitlines() if str(graph) in line]
    assert not left, left
