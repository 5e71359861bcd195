"""Helpers of the chaos suite: run the real inspection line (graphs/inspection.yaml) against
the test's own simulated Modbus PLC, find processes, kill them, and count parts at the PLC."""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from procgraph.agents.modbus.sim import SimulatedPlc

from pgtest_procs import alive  # noqa: F401  (used by the chaos tests)
from procgraph.brokers import free_port
from procgraph.graph import load_graph
from procgraph.health import read_heartbeats
from procgraph.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]
GRAPH = ROOT / "graphs" / "inspection.yaml"
HAVE_MODELS = (ROOT / "models" / "parts-front.onnx").exists()


@dataclass
class Tally:
    """What the PLC took, against the parts the line was asked to make."""

    scenario: str
    parts: int
    received: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    incomplete: int = 0
    incomplete_keys: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One row of the figures table."""
        return (f"CHAOS {self.scenario}: parts={self.parts} received={self.received} "
                f"lost={len(self.lost)} duplicated={len(self.duplicated)} "
                f"unexpected={len(self.unexpected)} incomplete={self.incomplete} "
                f"violations={len(self.violations)} "
                f"incomplete_keys={self.incomplete_keys[:3]}..{self.incomplete_keys[-2:]}")


def tally(scenario: str, plc: SimulatedPlc, parts: int) -> Tally:
    """Count the parts at the PLC: lost, duplicated, unexpected keys, incomplete, violations."""
    keys = [p["key"] for p in plc.received]
    expected = {f"part-{i}" for i in range(parts)}
    seen: set[str] = set()
    dup = []
    for k in keys:
        if k in seen:
            dup.append(k)
        seen.add(k)
    t = Tally(scenario, parts, received=len(keys), lost=sorted(expected - seen),
              duplicated=dup, unexpected=sorted(seen - expected),
              incomplete=sum(p["outcome"] == "incomplete" for p in plc.received),
              incomplete_keys=[p["key"] for p in plc.received if p["outcome"] == "incomplete"],
              violations=list(plc.violations))
    print(t.line())
    return t


def check(t: Tally, outage_s: float, rate: float, slack: int) -> None:
    """The issue's promise for one fault: nothing lost, nothing doubled, no handshake
    violation, and incomplete only for the parts captured while the process was away: one
    run of consecutive parts, at most ``outage_s * rate + slack`` long (the line lines up
    again by itself)."""
    allowed = math.ceil(outage_s * rate) + slack
    assert t.violations == [], t.violations
    assert t.duplicated == [], f"{t.line()}: {t.duplicated}"
    assert t.unexpected == [], f"{t.line()}: {t.unexpected}"
    assert t.lost == [], f"{t.line()}: {t.lost}"
    assert t.incomplete <= allowed, f"{t.line()} (outage {outage_s:.1f}s, allowed {allowed})"
    seqs = sorted(int(k.rsplit("-", 1)[1]) for k in t.incomplete_keys)
    if seqs:
        assert seqs[-1] - seqs[0] < allowed, f"{t.line()}: incomplete parts {seqs} not one run"


def wait_parts(plc: SimulatedPlc, parts: int, timeout_s: float) -> None:
    """Wait until the PLC took every part key once (or the time is up), then a little more
    so that a duplicate, if any, arrives too."""
    want = {f"part-{i}" for i in range(parts)}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if want <= {p["key"] for p in list(plc.received)}:
            break
        time.sleep(0.1)
    time.sleep(1.0)


def line_env(parts: int, rate: float, window_ms: int, plc_port: int,
             url: str | None) -> dict[str, str | None]:
    """The environment graphs/inspection.yaml reads (None: unset)."""
    return {"PROCGRAPH_REDIS": url, "PLC_PORT": str(plc_port), "PLC_SIM": "false",
            "HMI_PORT": str(free_port()), "PART_COUNT": str(parts), "PARTS_PER_S": str(rate),
            "JOIN_WINDOW_MS": str(window_ms)}


@contextmanager
def patched_env(env: dict[str, str | None]) -> Iterator[None]:
    """Set (or unset, for None) these variables for the block."""
    old = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def plc_sim() -> Iterator[SimulatedPlc]:
    """The test's simulated PLC on a free port, logging every part it takes."""
    plc = SimulatedPlc("127.0.0.1", free_port())
    plc.start_thread()
    try:
        yield plc
    finally:
        plc.stop_thread()


@contextmanager
def inspection(plc: SimulatedPlc, parts: int, rate: float, window_ms: int,
               url: str | None, state_dir: Path) -> Iterator[Supervisor]:
    """The inspection graph under an in-process supervisor (``url`` None: embedded broker)."""
    with patched_env(line_env(parts, rate, window_ms, plc.port, url)):
        plan = load_graph(GRAPH)
        out = io.StringIO()
        sup = Supervisor(plan, out=out, colour=False, state_dir=state_dir)
        sup.start_in_thread()
        try:
            yield sup
        finally:
            sup.shutdown()
            print(out.getvalue()[-5000:])


def replica_pid(sup: Supervisor, agent: str, index: int = 0) -> int:
    """The pid of a running replica (fails when it has none)."""
    rep = next(r for r in sup.replicas if r.agent.name == agent and r.index == index)
    assert rep.pid is not None, f"{agent}[{index}] is not running"
    return rep.pid


def wait_restarted(sup: Supervisor, agent: str, old_pid: int, timeout_s: float = 20) -> float:
    """Wait until the agent's replica 0 runs again under a new pid and publishes its first
    heartbeat (it is working again); returns when (monotonic)."""
    rep = next(r for r in sup.replicas if r.agent.name == agent and r.index == 0)
    client = redis.Redis.from_url(sup.urls[rep.agent.broker])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            pid = rep.pid
            if pid not in (None, old_pid):
                beat = read_heartbeats(client, sup.plan.name, [(agent, 0)]).get((agent, 0))
                if beat is not None and beat.pid == pid:
                    return time.monotonic()
            time.sleep(0.05)
    finally:
        client.close()
    raise AssertionError(f"{agent} was not back within {timeout_s}s")


def children(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        todo += kids
    return out


def run_cli(env: dict[str, str | None], state_dir: Path, log: Path) -> subprocess.Popen[Any]:
    """``procgraph run graphs/inspection.yaml`` as an operator starts it, in its own process."""
    full = {k: v for k, v in os.environ.items()}
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "procgraph", "run", str(GRAPH), "--state-dir",
             str(state_dir)], env=full, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True)


def stop_cli(proc: subprocess.Popen[Any], timeout_s: float = 20) -> None:
    """SIGTERM a ``procgraph run`` and wait for it (SIGKILL of its group after the timeout)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
