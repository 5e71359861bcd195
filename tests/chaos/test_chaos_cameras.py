"""Chaos on the camera side of the real inspection line: kill -9 of the part trigger or of a
camera, and a camera stalled 4 s;
counted at the simulated Modbus PLC (docs/agents/modbus.md's handshake):
no part key twice, none lost, incomplete only for parts captured in the outage.

Every test runs graphs/inspection.yaml as shipped, with its embedded (durable) broker in the
test's own state folder, 40 parts at 10 parts/s and the default 3 s join window."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from chaos_line import (
    HAVE_MODELS,
    check,
    inspection,
    plc_sim,
    replica_pid,
    tally,
    wait_parts,
    wait_restarted,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not HAVE_MODELS, reason="demo models not built")]

PARTS, RATE, WINDOW_MS = 40, 10.0, 3000
#: parts made while a process is away may turn incomplete (fail-safe): this many, plus slack
SLACK_PARTS = 6  # + the triggers a camera had read ahead at the kill


@pytest.mark.parametrize("agent", ["trigger", "front_cam", "back_cam"])
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


def test_camera_stalled_4_s(tmp_path: Path) -> None:
    with plc_sim() as plc, inspection(plc, PARTS, RATE, WINDOW_MS, None,
                                      tmp_path / "state") as sup:
        plc.wait_for_parts(8, timeout_s=40)
        pid = replica_pid(sup, "front_cam")
        os.kill(pid, signal.SIGSTOP)
        time.sleep(4.0)
        os.kill(pid, signal.SIGCONT)
        wait_parts(plc, PARTS, timeout_s=30)
    check(tally("camera stalled 4 s", plc, PARTS), 4.0, RATE, SLACK_PARTS)
