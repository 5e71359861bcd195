"""Two hosts on one machine for the chaos suite: two network namespaces joined by a veth pair,
processes started in them with ``ip netns exec``, a partition (link down) and packet loss
(``iptables -m statistic``), and a simulated PLC inside a namespace that logs every part it
takes to a JSON-lines file the test counts.

The host gets a blackhole route for the test subnet before any address is made, so a packet
sent to it from outside the namespaces fails locally instead of leaving the machine; the route,
the namespaces (with their veth ends and iptables rules) and every process started here are
removed on exit, also when the test fails.

Run as a script, ``python netns.py plc --host H --port P --out FILE`` is the PLC side: a
:class:`~procgraph.agents.modbus.sim.SimulatedPlc` that appends each part (and each handshake
violation) to FILE as it takes it, until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def can_make_namespaces() -> str | None:
    """Why this machine cannot run the two-host tests (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (ip netns, veth, iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install -y iproute2 iptables)"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Host:
    """One end of the pair: a namespace, its veth end and its address."""

    ns: str
    dev: str
    addr: str

    def exec_args(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a short command in this namespace (fails on a non-zero exit)."""
        return subprocess.run(self.exec_args(argv), check=True, capture_output=True, text=True,
                              timeout=10)


@dataclass
class TwoHosts:
    """Two namespaces joined by a veth pair on ``subnet`` (10.201.x.0/24)."""

    subnet: str
    a: Host
    b: Host
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def start(self, host: Host, argv: Sequence[str], env: dict[str, str], log: Path,
              cwd: Path = ROOT) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``host``'s namespace (own session, output to ``log``); it is
        stopped on exit if the test did not stop it."""
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(host.exec_args(argv), env=env, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        self.procs.append(proc)
        return proc

    def link(self, up: bool) -> None:
        """Take the link between the hosts down (a partition) or bring it up again."""
        _ip("-n", self.a.ns, "link", "set", self.a.dev, "up" if up else "down")

    def loss(self, probability: float | None) -> None:
        """Drop this share of the packets arriving at either host over the link (None: stop)."""
        for host in (self.a, self.b):
            host.run("iptables", "-F", "INPUT")
            if probability:
                host.run("iptables", "-A", "INPUT", "-i", host.dev, "-m", "statistic",
                         "--mode", "random", "--probability", str(probability), "-j", "DROP")

    def dropped(self) -> int:
        """Packets the loss rules dropped so far (both hosts)."""
        total = 0
        for host in (self.a, self.b):
            out = host.run("iptables", "-L", "INPUT", "-v", "-x", "-n").stdout
            total += sum(int(line.split()[0]) for line in out.splitlines()
                         if "statistic" in line)
        return total


def stop(proc: subprocess.Popen[Any], timeout_s: float = 20) -> None:
    """SIGTERM a process we started and wait for it (SIGKILL of its group after the timeout)."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextmanager
def two_hosts(tag: str, third_octet: int) -> Iterator[TwoHosts]:
    """Namespaces ``pg<tag>a`` / ``pg<tag>b`` at 10.201.<third_octet>.1 / .2, blackholed on
    the host first; everything undone on exit."""
    subnet = f"10.201.{third_octet}.0/24"
    net = TwoHosts(subnet, Host(f"pg{tag}a", f"pg{tag}va", f"10.201.{third_octet}.1"),
                   Host(f"pg{tag}b", f"pg{tag}vb", f"10.201.{third_octet}.2"))
    made: list[str] = []
    try:
        _ip("route", "add", "blackhole", subnet)  # first: nothing to this subnet leaves the host
        made.append("route")
        for host in (net.a, net.b):
            _ip("netns", "add", host.ns)
            made.append(host.ns)
        _ip("link", "add", net.a.dev, "type", "veth", "peer", "name", net.b.dev)
        made.append("veth")
        for host in (net.a, net.b):
            _ip("link", "set", host.dev, "netns", host.ns)
            _ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", host.dev)
            _ip("-n", host.ns, "link", "set", host.dev, "up")
            _ip("-n", host.ns, "link", "set", "lo", "up")
        yield net
    finally:
        for proc in reversed(net.procs):
            stop(proc)
        for host in (net.b, net.a):
            if host.ns in made:  # its veth end and iptables rules go with it
                subprocess.run(["ip", "netns", "del", host.ns], capture_output=True, timeout=10)
        if "veth" in made:  # still on the host only if moving it failed
            subprocess.run(["ip", "link", "del", net.a.dev], capture_output=True, timeout=10)
        if "route" in made:
            subprocess.run(["ip", "route", "del", "blackhole", subnet], capture_output=True,
                           timeout=10)


@dataclass
class PlcLog:
    """What the PLC in the namespace took so far, read back from its file."""

    received: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> PlcLog:
        """Parse the PLC's JSON-lines file (a half-written last line is ignored)."""
        log = cls()
        if not path.exists():
            return log
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "violation" in rec:
                log.violations.append(rec["violation"])
            else:
                log.received.append(rec)
        return log


def wait_plc(path: Path, parts: int, timeout_s: float, settle_s: float = 1.5) -> PlcLog:
    """Wait until the PLC took every key ``part-0`` .. ``part-<parts-1>`` (or the time is up),
    then ``settle_s`` more so that a duplicate, if any, arrives too."""
    want = {f"part-{i}" for i in range(parts)}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if want <= {p["key"] for p in PlcLog.read(path).received}:
            break
        time.sleep(0.2)
    time.sleep(settle_s)
    return PlcLog.read(path)


def wait_count(path: Path, count: int, timeout_s: float) -> float:
    """Wait until the PLC took ``count`` parts; returns when (monotonic)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(PlcLog.read(path).received) >= count:
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"the PLC took fewer than {count} parts within {timeout_s}s: "
                         f"{len(PlcLog.read(path).received)}")


def _plc_main(host: str, port: int, out: Path) -> None:
    """The PLC side (see the module docstring)."""
    from procgraph.agents.modbus.sim import SimulatedPlc

    plc = SimulatedPlc(host, port)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    plc.start_thread()
    done_parts = done_viol = 0
    with out.open("a") as f:
        print(f"PLC listening on {host}:{port}", flush=True)
        while True:
            last = stopping
            parts, viol = list(plc.received), list(plc.violations)
            for rec in parts[done_parts:]:
                f.write(json.dumps(rec) + "\n")
            for v in viol[done_viol:]:
                f.write(json.dumps({"violation": v}) + "\n")
            f.flush()
            done_parts, done_viol = len(parts), len(viol)
            if last:
                break
            time.sleep(0.05)
    plc.stop_thread()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plc", help="a simulated PLC logging its parts to a file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sys.exit(_plc_main(args.host, args.port, args.out))
