"""Start-up and memory of the inspection line: spawned replicas vs the fork server.

    python benchmarks/startup.py            # each mode twice, 10 s of parts each
    python benchmarks/startup.py --quick    # once, 4 s

graphs/inspection.yaml as shipped (simulated PLC, HMI), parts at --rate per second, on a
Valkey this script starts, the supervisor in its own process. Two modes in the same run:
``spawn`` (each replica a new ``python -m procgraph agent`` process: the baseline, as before
the fork server) and ``fork`` (replicas forked from the line's fork server,
procgraph.forkserver). Per replica: spawn -> first heartbeat (the process's kernel start time
to the ``ts`` of its first heartbeat in the broker); the line: supervisor start -> every first
heartbeat. Memory: PSS (/proc/PID/smaps_rollup) of the whole line (supervisor, guard, fork
server, replicas, Valkey) after --seconds of parts, against the single-process loop of
benchmarks/e2e.py doing the same work (render, two models, PLC writes) at the same rate,
measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GRAPH = ROOT / "graphs" / "inspection.yaml"
sys.path.insert(0, str(ROOT / "benchmarks"))


def pss_kb(pid: int) -> int:
    """The PSS of one process in kB (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def family(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        kids = [c for c, p in parents.items() if p == parent and c not in found]
        found += kids
        todo += kids
    return found


def process_name(pid: int) -> str:
    """A short name for ``pid``: its title (``procgraph: agent clf-front/0``) or command."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return str(pid)
    if pid == os.getpid():
        return "benchmark"
    words = cmd.split()
    if "agent" in words[:-3] and len(words) >= 3:  # procgraph agent GRAPH AGENT N
        return f"{words[-2]}/{words[-1]}"
    return " ".join(Path(w).name for w in words[:2])[:40] or str(pid)


def started_wall(pid: int) -> float:
    """The wall-clock time ``pid`` started (its kernel start time, 10 ms ticks)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    offset = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return offset + ticks / os.sysconf("SC_CLK_TCK")


def serve(mode: str, seconds: float) -> None:
    """(child) Run the line until SIGTERM: ``fork`` or ``spawn`` replicas."""
    from procgraph.graph import load_graph
    from procgraph.supervisor import Supervisor

    sup = Supervisor(load_graph(GRAPH), out=io.StringIO(), colour=False)
    sup.use_fork_server = mode == "fork"
    sup.handle_signals()
    sup.run()


def run_loop(seconds: float, rate: float) -> None:
    """(child) The single-process loop of benchmarks/e2e.py; prints its PSS at the end."""
    import e2e

    e2e.run_baseline(max(1, int(seconds * rate)), rate)
    print(json.dumps({"pss_kb": pss_kb(os.getpid())}), flush=True)


def measure_line(mode: str, seconds: float, rate: float, url: str,
                 broker_pid: int) -> dict[str, Any]:
    """Start the line in ``mode``; first heartbeats, then PSS after ``seconds`` of parts."""
    import redis

    from procgraph.brokers import free_port
    from procgraph.graph import load_graph
    from procgraph.health import read_heartbeats

    plan = load_graph(GRAPH)
    names = [(a.name, i) for a in plan.agents.values() for i in range(a.replicas)]
    client = redis.Redis.from_url(url)
    client.flushall()
    env = dict(os.environ, PROCGRAPH_REDIS=url, PLC_PORT=str(free_port()),
               HMI_PORT=str(free_port()), PARTS_PER_S=str(rate), PYTHONUNBUFFERED="1")
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", mode], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first: dict[tuple[str, int], tuple[int, float]] = {}
    try:
        deadline = time.monotonic() + 90
        while len(first) < len(names):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{mode}: only {len(first)}/{len(names)} heartbeats")
            for key, beat in read_heartbeats(client, plan.name, names).items():
                if key not in first or first[key][0] != beat.pid:
                    first[key] = (beat.pid, beat.ts)
            time.sleep(0.01)
        ready = max(ts for _, ts in first.values()) - t0
        per = {}
        for key, (pid, ts) in first.items():
            per[f"{key[0]}[{key[1]}]"] = ts - started_wall(pid)
        time.sleep(seconds)
        pids = family(proc.pid)
        line = {pid: pss_kb(pid) for pid in pids}
        line[broker_pid] = pss_kb(broker_pid)
        names = {pid: process_name(pid) for pid in line}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        client.close()
    return {"per": per, "ready": ready, "pss_kb": sum(line.values()), "procs": len(line),
            "by_process": {names[pid]: kb for pid, kb in line.items()}}


def main() -> None:
    """Measure both modes and the loop, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round, 4 s of parts (< 60 s)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of each mode")
    ap.add_argument("--seconds", type=float, default=10.0, help="parts before PSS is read")
    ap.add_argument("--rate", type=float, default=20.0, help="parts per second")
    ap.add_argument("--serve", choices=("fork", "spawn", "loop"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 4.0
    if args.serve == "loop":
        run_loop(args.seconds, args.rate)
        return
    if args.serve:
        serve(args.serve, args.seconds)
        return

    from procgraph.brokers import EmbeddedBroker

    results: dict[str, list[dict[str, Any]]] = {"spawn": [], "fork": []}
    loops: list[int] = []
    with EmbeddedBroker() as broker:
        assert broker.proc is not None
        for n in range(args.rounds):
            for mode in ("spawn", "fork"):
                print(f"round {n + 1}: {mode}...", file=sys.stderr, flush=True)
                results[mode].append(measure_line(mode, args.seconds, args.rate, broker.url,
                                                  broker.proc.pid))
            print(f"round {n + 1}: single-process loop...", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, __file__, "--serve", "loop", "--seconds",
                                  str(args.seconds), "--rate", str(args.rate)],
                                 capture_output=True, text=True, check=True).stdout
            loops.append(json.loads(out.strip().splitlines()[-1])["pss_kb"])
    loop_mb = min(loops) / 1024
    print("| replicas started by | spawn -> first heartbeat, median s | max s | "
          "line start -> all heartbeats s | line PSS MB | vs loop PSS |")
    print("|---|---|---|---|---|---|")
    for mode, label in (("spawn", "new processes (baseline)"), ("fork", "fork server")):
        for r in results[mode]:
            vals = sorted(r["per"].values())
            pss = r["pss_kb"] / 1024
            print(f"| {label} | {vals[len(vals) // 2]:.2f} | {vals[-1]:.2f} | "
                  f"{r['ready']:.2f} | {pss:.0f} ({r['procs']} procs) | "
                  f"{pss / loop_mb:.2f}x |")
    print(f"| single-process loop (e2e.py) | - | - | - | {loop_mb:.0f} | 1.00x |")
    for mode in ("fork", "spawn"):
        best = min(results[mode], key=lambda r: r["pss_kb"])["by_process"]
        print(f"\n{mode}: PSS MB by process: " + ", ".join(
            f"{name} {kb / 1024:.0f}" for name, kb in sorted(best.items(), key=lambda x: -x[1])))
    med = {m: sorted(v for r in results[m] for v in r["per"].values()) for m in results}
    fast = med["spawn"][len(med["spawn"]) // 2] / med["fork"][len(med["fork"]) // 2]
    mem = min(r["pss_kb"] for r in results["fork"]) / min(r["pss_kb"]
                                                           for r in results["spawn"])
    print(f"\nfork server vs spawn: first heartbeat {fast:.1f}x sooner (median), "
          f"line PSS {mem:.2f}x; line PSS vs loop: "
          f"{min(r['pss_kb'] for r in results['fork']) / 1024 / loop_mb:.2f}x (fork), "
          f"{min(r['pss_kb'] for r in results['spawn']) / 1024 / loop_mb:.2f}x (spawn); "
          f"parts at {args.rate:g}/s, PSS after {args.seconds:g} s")


if __name__ == "__main__":
    main()
