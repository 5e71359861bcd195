"""Chaos on the real inspection line: kill -9 each kind of process, stall a camera, kill the
supervisor and start a fresh run; count at the simulated Modbus PLC (docs/agents/modbus.md's
handshake): no part key twice, none lost, incomplete only for parts captured in the outage.

Every test runs graphs/inspection.yaml as shipped, with its embedded (durable) broker in the
test's own state folder, 40 parts at 10 parts/s. The join window is 10 s here (3 s by default)
so that a slow start on a loaded test machine turns no part incomplete: a view that is really
lost still shows, as an incomplete part or as a part that never reaches the PLC. The camera
faults, whose parts may turn incomplete, use the default window (tests of the camera line-up)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from chaos_line import (
    HAVE_MODELS,
    alive,
    check,
    children,
    inspection,
    line_env,
    plc_sim,
    replica_pid,
    run_cli,
    stop_cli,
    tally,
    wait_parts,
    wait_restarted,
)

from pgtest_util import wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not HAVE_MODELS, reason="demo models not built")]

PARTS, RATE, WINDOW_MS = 40, 10.0, 10_000
#: parts made while a process is away may turn incomplete (fail-safe): this many, plus slack
SLACK_PARTS = 3


@pytest.mark.parametrize("agent", ["front_clf", "join", "plc", "hmi"])
def test_kill_9_of_an_agent(agent: str, tmp_path: Path) -> None:
    with plc_sim() as plc, inspection(plc, PARTS, RATE, WINDOW_MS, None,
                                      tmp_path / "state") as sup:
        plc.wait_for_parts(8, timeout_s=40)
        pid = replica_pid(sup, agent)
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        t_back = wait_restarted(sup, agent, pid)
        wait_parts(plc, PARTS, timeout_s=30)
    check(tally(f"kill -9 {agent}", plc, PARTS), t_back - t_kill, RATE, SLACK_PARTS)


def test_kill_9_of_the_embedded_broker(tmp_path: Path) -> None:
    with plc_sim() as plc, inspection(plc, PARTS, RATE, WINDOW_MS, None,
                                      tmp_path / "state") as sup:
        plc.wait_for_parts(8, timeout_s=40)
        broker = sup.brokers["main"]
        assert broker.proc is not None
        old = broker.proc.pid
        t_kill = time.monotonic()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: broker.proc is not None and broker.proc.pid != old
                 and broker.proc.poll() is None, 20, "the broker to be restarted")
        t_back = time.monotonic()
        wait_parts(plc, PARTS, timeout_s=30)
    check(tally("kill -9 embedded broker", plc, PARTS), t_back - t_kill, RATE, SLACK_PARTS)


def test_kill_9_of_the_supervisor_then_a_fresh_run(tmp_path: Path) -> None:
    state = tmp_path / "state"
    log = tmp_path / "run.log"
    with plc_sim() as plc:
        env = line_env(PARTS, RATE, WINDOW_MS, plc.port, None)
        first = run_cli(env, state, log)
        kids: list[int] = []
        try:
            plc.wait_for_parts(8, timeout_s=40)
            kids = children(first.pid)
            assert kids, "the supervisor runs no processes"
            t_kill = time.monotonic()
            os.kill(first.pid, signal.SIGKILL)
            first.wait(5)
            wait_for(lambda: not any(alive(p) for p in kids), 5,
                     "every agent and the broker to end with their supervisor")
        finally:
            for p in kids:  # orphans left by a supervisor that did not take them along
                if alive(p):
                    os.kill(p, signal.SIGKILL)
            if first.poll() is None:
                first.kill()
                first.wait(5)
        second = run_cli(env, state, log)
        try:
            t_back = time.monotonic() + 2.0  # about when the fresh line makes parts again
            wait_parts(plc, PARTS, timeout_s=40)
        finally:
            stop_cli(second)
        print(log.read_text()[-5000:])
    check(tally("kill -9 supervisor, fresh run", plc, PARTS), t_back - t_kill, RATE, SLACK_PARTS)
