"""The inspection line's benchmark: trigger -> PLC written, against the single-process loop.

    python benchmarks/line.py latency        # 20 parts/s: p50/p99 trigger -> PLC written
    python benchmarks/line.py flat           # parts/s flat out
    python benchmarks/line.py big            # 2448x2048 mono8 (5 MB) cameras at 10 parts/s
    python benchmarks/line.py plc            # the PLC writer alone into 1, 2, 4, 8 slots
    python benchmarks/line.py latency --quick

procgraph: graphs/inspection.yaml as shipped (trigger, two synthetic triggered cameras, two
ONNX classifiers, the join, the Modbus PLC writer, the HMI with an operator's screen attached:
a client on its ``/events`` stream fetching both camera pictures every second), on an
embedded Valkey, writing to a simulated PLC (a real Modbus TCP server) in this process. Only
``slots`` (the PLC mailbox, ``--slots``) and, in ``big``, the cameras' size are changed, in
a copy of the graph. baseline: benchmarks/e2e.py's single-process loop doing the same work
(render both views, run both models, write the outcome to the same simulated PLC with the
same mailbox), paced by the same clock: a part's latency runs from when it was due (the
trigger) to when the PLC writer had it written, so a loop that falls behind pays for it too.

Parts counted ``missing`` never reached the PLC: a part whose trigger both cameras skipped
(older than their ``max_trigger_age_ms`` when they got to it) is unknown to the join.

CPU per part: user + system time of every process (this one, with the simulated PLC and the
supervisor, the broker and every agent) between the first and the last part at the PLC,
divided by the parts in between. In ``big`` the synthetic cameras render without dust and
lighting (``--nuisances`` puts them back): at 5 MB those cost ~70 ms of CPU per view, work
that a real camera does not do on the host.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast

import numpy as np
import redis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procgraph.agents.camera import synthetic as parts
from procgraph.agents.messages import PartOutcome, Trigger
from procgraph.agents.modbus.client import PlcWriter
from procgraph.agents.modbus.registers import RegisterMap
from procgraph.agents.modbus.sim import SimulatedPlc
from startup import family, process_name

from e2e import ROOT, Model, defects_outcome, pct
from procgraph import codec
from procgraph.brokers import EmbeddedBroker, free_port
from procgraph.graph import load_graph
from procgraph.supervisor import Supervisor

GRAPH = ROOT / "graphs" / "inspection.yaml"
WARMUP = 10  # the first parts (first inferences, caches) are left out of the latencies
BIG = (2048, 2448)  # height, width: 2448x2048 mono8, 5 MB a frame


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (gone ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


class CpuWindow:
    """CPU of the whole process family between the first and the last part at the PLC."""

    def __init__(self) -> None:
        self.start: tuple[float, int] | None = None
        self.end: tuple[float, int] | None = None
        self.pids: list[int] = []
        self.per_pid_start: dict[int, float] = {}
        self.per_pid_end: dict[int, float] = {}
        self.names: dict[int, str] = {}

    def sample(self, parts_done: int, last: bool = False) -> None:
        """Take the first sample at the first part, the last one when told."""
        if self.start is None and parts_done:
            self.pids = family(os.getpid())
            self.per_pid_start = {pid: cpu_s([pid]) for pid in self.pids}
            self.names = {pid: "benchmark+PLC" if pid == os.getpid() else process_name(pid)
                          for pid in self.pids}
            self.start = (sum(self.per_pid_start.values()), parts_done)
        elif last and self.start is not None:
            self.per_pid_end = {pid: cpu_s([pid]) for pid in self.pids}
            self.end = (sum(self.per_pid_end.values()), parts_done)

    def by_process(self) -> str:
        """CPU ms per part of each process over the window, biggest first."""
        if self.start is None or self.end is None or self.end[1] <= self.start[1]:
            return ""
        parts = self.end[1] - self.start[1]
        rows = []
        for pid in self.pids:
            used = self.per_pid_end.get(pid, 0.0) - self.per_pid_start.get(pid, 0.0)
            rows.append((used * 1000 / parts, self.names.get(pid, str(pid))))
        rows.sort(reverse=True)
        return ", ".join(f"{name} {ms:.1f}" for ms, name in rows if ms >= 0.05)

    def ms_per_part(self) -> float:
        """CPU ms per part over the window (nan without one)."""
        if self.start is None or self.end is None or self.end[1] <= self.start[1]:
            return float("nan")
        return (self.end[0] - self.start[0]) * 1000 / (self.end[1] - self.start[1])


@contextmanager
def operator_screen(port: int) -> Iterator[None]:
    """An HMI client: reads ``/events`` and fetches both camera pictures every second."""
    stop = threading.Event()

    def events() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/events", timeout=2) as r:
                    while not stop.is_set() and r.readline():
                        pass
            except OSError:
                stop.wait(0.5)

    def pictures() -> None:
        while not stop.wait(1.0):
            for cam in ("front", "back"):
                with suppress(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/camera/{cam}.jpg",
                                           timeout=2).read()

    threads = [threading.Thread(target=f, daemon=True) for f in (events, pictures)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()


def line_graph(folder: Path, slots: int, size: tuple[int, int] | None,
               nuisances: bool, flat: bool) -> Path:
    """A copy of graphs/inspection.yaml with the mailbox slots (and camera size) set; flat
    out, the cameras capture every trigger however late (the burst of triggers queues)."""
    spec = yaml.safe_load(GRAPH.read_text())
    agents = spec["agents"]
    agents["plc"]["params"]["slots"] = slots
    # the conveyor starts once every agent is up (models loaded), not only the cameras
    agents["trigger"]["params"]["wait_for"] = [n for n in agents if n not in ("trigger",
                                                                              "plc_sim")]
    for name in ("front_clf", "back_clf"):
        agents[name]["params"]["model"] = str((GRAPH.parent / agents[name]["params"]["model"])
                                              .resolve())
    for cam in ("front_cam", "back_cam") if flat else ():
        agents[cam]["params"]["max_trigger_age_ms"] = 3_600_000
    if size is not None:
        for cam in ("front_cam", "back_cam"):
            agents[cam]["params"].update(size=list(size), dust=nuisances, lighting=nuisances)
    out = folder / "inspection.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def run_line(count: int, rate: float, slots: int, size: tuple[int, int] | None = None,
             nuisances: bool = True, window_ms: int = 3000) -> dict[str, Any]:
    """Run the line for ``count`` parts at ``rate`` parts/s (0: flat out); the figures."""
    plc_port, hmi_port = free_port(), free_port()
    cpu = CpuWindow()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"PROCGRAPH_REDIS": broker.url, "PLC_PORT": str(plc_port),
                           "PLC_SIM": "false", "HMI_PORT": str(hmi_port),
                           "PART_COUNT": str(count), "PARTS_PER_S": str(rate or 10_000),
                           "JOIN_WINDOW_MS": str(window_ms if rate else 600_000)})
        plc = SimulatedPlc("127.0.0.1", plc_port, RegisterMap(slots=slots))
        plc.start_thread()
        graph = line_graph(Path(tmp), slots, size, nuisances, flat=not rate)
        sup = Supervisor(load_graph(graph),
                         out=io.StringIO(), colour=False)
        tap = Tap(broker.url)
        try:
            sup.start()
            with operator_screen(hmi_port):
                deadline = time.monotonic() + 90 + count / max(rate, 1) * 3
                last, idle_since = 0, time.monotonic()
                while len(plc.received) < count:
                    now = time.monotonic()
                    if len(plc.received) != last:
                        last, idle_since = len(plc.received), now
                    if now > deadline or (last and now - idle_since > 15):
                        print(f"  only {last}/{count} parts reached the PLC (no progress "
                              "for 15 s): the rest are counted missing", flush=True)
                        break
                    sup.poll()
                    cpu.sample(len(plc.received))
                    time.sleep(0.02)
                cpu.sample(len(plc.received), last=True)
            time.sleep(0.3)
        finally:
            tap.close()
            sup.shutdown()
            plc.stop_thread()
    outs = [cast(PartOutcome, codec.decode(f, PartOutcome))
            for _, f in tap.entries["pg:inspection:plc:written"]]
    triggers = [cast(Trigger, codec.decode(f, Trigger))
                for _, f in tap.entries["pg:inspection:trigger:triggers"]]
    due = {t.key: t.trigger_ns for t in triggers}
    hops = tap.hops()
    written: dict[str, PartOutcome] = {}
    for o in outs:  # the first report of each part
        if o.plc_written_ns:
            written.setdefault(o.key, o)
    lat = [(int(o.plc_written_ns or 0) - due[k]) / 1e6 for k, o in written.items()
           if k in due and int(k.rsplit("-", 1)[1]) >= WARMUP]
    views = [float(max(v.capture_ns for v in o.verdicts.values()) - due[k]) / 1e6
             for k, o in written.items() if k in due and o.verdicts]
    hops = f"trigger>last view captured {pct(views, 50):.1f}/{pct(views, 99):.1f}; {hops}"
    hops += "\ntrace of the last view, p50/p99 ms (in agent, then to the next): " + traced(
        [o.trace for k, o in written.items() if int(k.rsplit("-", 1)[1]) >= WARMUP])
    span = (max(int(o.plc_written_ns or 0) for o in written.values())
            - min(due[k] for k in written if k in due)) / 1e9
    return {"parts": len(written), "missing": count - len(written),
            "rate": len(written) / span, "lat": lat,
            "incomplete": sum(o.outcome == "incomplete" for o in written.values()),
            "dup": sum(p["duplicate"] for p in plc.received),
            "cpu": cpu.ms_per_part(), "hops": hops,
            "cpu_by_process": cpu.by_process()}


def traced(traces: list[list[Any]]) -> str:
    """p50/p99 of each hop's time in its agent (read -> sent) and from there to the next
    agent's read, over traces of the same shape (the most common one)."""
    shapes: dict[tuple[str, ...], list[list[Any]]] = {}
    for t in traces:
        shapes.setdefault(tuple(h.agent for h in t), []).append(t)
    if not shapes:
        return "-"
    agents, same = max(shapes.items(), key=lambda kv: len(kv[1]))
    out = []
    for i, agent in enumerate(agents):
        inside = [(t[i].out_ns - t[i].in_ns) / 1e6 for t in same]
        out.append(f"{agent} {pct(inside, 50):.1f}/{pct(inside, 99):.1f}")
        if i + 1 < len(agents):
            gap = [(t[i + 1].in_ns - t[i].out_ns) / 1e6 for t in same]
            out.append(f"> {pct(gap, 50):.1f}/{pct(gap, 99):.1f} >")
    return " ".join(out)


#: the line's streams in order (the frames' entries are small: the pixels of 64 KiB and up
#: travel through shared memory, the entry holds a reference)
STAGES = [("trigger", "triggers"), ("front_cam", "frames"), ("front_clf", "verdicts"),
          ("join", "outcomes"), ("plc", "written")]


class Tap:
    """Reads the line's small streams as they fill (plain XREAD, no group: the line does
    not notice; its acked entries are trimmed, so reading afterwards is too late)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.entries: dict[str, list[tuple[int, dict[bytes, bytes]]]] = {
            f"pg:inspection:{a}:{p}": [] for a, p in STAGES}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        last = dict.fromkeys(self.entries, "0-0")
        while not self.stop.is_set():
            got: Any = self.client.xread(last, count=200, block=200)  # type: ignore[arg-type]
            for stream, items in got or []:
                name = stream.decode()
                for entry_id, fields in items:
                    last[name] = entry_id.decode()
                    self.entries[name].append((int(entry_id.split(b"-")[0]), fields))

    def close(self) -> None:
        """Stop reading."""
        self.stop.set()
        self.thread.join(5)
        self.client.close()

    def arrivals(self, agent: str, port: str) -> dict[str, int]:
        """Part key -> when the broker got its first entry on that stream (ms)."""
        seen: dict[str, int] = {}
        for ms, fields in self.entries[f"pg:inspection:{agent}:{port}"]:
            seen.setdefault(json.loads(fields[b"h"]).get("key", ""), ms)
        return seen

    def hops(self) -> str:
        """p50/p99 ms between a part's entries in consecutive streams (broker arrival)."""
        arrived = [self.arrivals(a, p) for a, p in STAGES]
        out = []
        for (a, _), (b, _), x, y in zip(STAGES, STAGES[1:], arrived, arrived[1:],
                                        strict=False):
            gaps = [float(y[k] - x[k]) for k in x if k in y]
            out.append(f"{a}>{b} {pct(gaps, 50):.0f}/{pct(gaps, 99):.0f}")
        return ", ".join(out)


def run_loop(count: int, rate: float, slots: int, size: tuple[int, int] | None = None,
             nuisances: bool = True, threads: int = 0) -> dict[str, Any]:
    """The single-process loop on the same clock: render, infer, decide, write to the PLC."""
    plc_port = free_port()
    regmap = RegisterMap(slots=slots)
    plc = SimulatedPlc("127.0.0.1", plc_port, regmap)
    plc.start_thread()
    models = {v: Model(ROOT / "models" / f"parts-{v}.onnx", threads) for v in ("front", "back")}
    writer = PlcWriter.tcp("127.0.0.1", plc_port, regmap)
    writer.connect()
    shape = size or (256, 256)
    lat: list[float] = []
    period = 1.0 / rate if rate > 0 else 0.0
    for v, m in models.items():  # warm up: first inference, the renderer's caches
        m.defective(parts.render_view(parts.make_part(0, np.random.default_rng([7, 0]), 0.25),
                                      v, shape, 1, nuisances, nuisances))
    cpu0 = cpu_s([os.getpid()])
    t0_wall, t0 = time.time_ns(), time.monotonic()
    try:
        for n in range(count):
            due = t0 + n * period
            time.sleep(max(0.0, due - time.monotonic()))
            due_ns = t0_wall + int(n * period * 1e9) if period else time.time_ns()
            spec = parts.make_part(n, np.random.default_rng([7, n]), 0.25)
            bad = {v: models[v].defective(parts.render_view(spec, v, shape, 1, nuisances,
                                                            nuisances)) for v in models}
            outcome = defects_outcome(bad["front"], bad["back"])
            writer.write_outcome(writer.next_seq, f"part-{n}", outcome, outcome != "ok")
            if n >= WARMUP:
                lat.append((time.time_ns() - due_ns) / 1e6)
        plc.wait_for_parts(count, 10)
    finally:
        writer.close()
        plc.stop_thread()
    span = (time.time_ns() - t0_wall) / 1e9
    return {"parts": count, "missing": 0, "rate": count / span, "lat": lat, "incomplete": 0,
            "dup": sum(p["duplicate"] for p in plc.received),
            "cpu": (cpu_s([os.getpid()]) - cpu0) * 1000 / count}


def run_mailbox(seconds: float, slots: int) -> dict[str, Any]:
    """The PLC writer alone, flat out, into the simulated PLC (10 ms scan) with ``slots``."""
    regmap = RegisterMap(slots=slots)
    plc = SimulatedPlc("127.0.0.1", free_port(), regmap)
    plc.start_thread()
    writer = PlcWriter.tcp("127.0.0.1", plc.port, regmap)
    writer.connect()
    lat: list[float] = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            t = time.perf_counter()
            writer.write_outcome(writer.next_seq, f"part-{len(lat)}", "ok", False)
            lat.append((time.perf_counter() - t) * 1000)
        plc.wait_for_parts(len(lat), 5)
    finally:
        writer.close()
        plc.stop_thread()
    s = plc.summary()
    return {"parts": len(lat), "rate": len(lat) / seconds, "lat": lat,
            "dup": len(s["duplicates"]), "gaps": len(s["gaps"]), "violations": len(s["violations"])}


def mailbox_table(seconds: float) -> None:
    """Parts/s of the writer into 1, 2, 4 and 8 slots; 1 (the single slot) is the baseline."""
    rows = {n: run_mailbox(seconds, n) for n in (1, 2, 4, 8)}
    print(f"\nmode plc: the PLC writer alone, flat out for {seconds:g} s into the simulated "
          f"PLC (10 ms scan); load {os.getloadavg()[0]:.2f}\n")
    print("| slots | parts/s | write p50 ms | write p99 ms | duplicates | seq gaps | violations "
          "| parts/s vs 1 slot |")
    print("|---|---|---|---|---|---|---|---|")
    for n, r in rows.items():
        print(f"| {n} | {r['rate']:.0f} | {pct(r['lat'], 50):.2f} | {pct(r['lat'], 99):.2f} | "
              f"{r['dup']} | {r['gaps']} | {r['violations']} | "
              f"{r['rate'] / rows[1]['rate']:.2f} |")


def table(mode: str, rows: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """The markdown table and the ratios."""
    line, loop = rows["procgraph"], rows["loop"]
    print(f"\nmode {mode}: {args.parts} parts at "
          f"{'flat out' if not args.rate else f'{args.rate:g} parts/s'}, PLC mailbox slots "
          f"{args.slots}{', 2448x2048 mono8 cameras' if mode == 'big' else ''}; "
          f"load {os.getloadavg()[0]:.2f}\n")
    print("| impl | parts | parts/s | p50 ms | p99 ms | max ms | CPU ms/part | incomplete "
          "| missing | duplicates |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['parts']} | {r['rate']:.1f} | {pct(r['lat'], 50):.1f} | "
              f"{pct(r['lat'], 99):.1f} | {max(r['lat'], default=float('nan')):.1f} | "
              f"{r['cpu']:.1f} | {r['incomplete']} | {r['missing']} | {r['dup']} |")
    print(f"\nline hops, p50/p99 ms (broker arrival, 1 ms steps; front view): {line['hops']}")
    print(f"line CPU ms per part by process: {line['cpu_by_process']}")
    p99 = pct(line["lat"], 99) / pct(loop["lat"], 99)
    print(f"\nprocgraph/loop: parts/s {line['rate'] / loop['rate']:.2f}, p99 {p99:.2f}, "
          f"CPU per part {line['cpu'] / loop['cpu']:.2f}")


MODES = {  # mode: (parts, rate, slots, quick parts); plc: seconds per slot count
    "plc": (5, 0.0, 1, 2),
    "latency": (400, 20.0, 1, 200),
    "flat": (400, 0.0, 4, 200),
    "big": (200, 10.0, 1, 80),
}


def main() -> None:
    """Parse, run the line and the loop, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("--parts", type=int, help="parts per run (default per mode)")
    ap.add_argument("--rate", type=float, help="parts/s, 0 = flat out (default per mode)")
    ap.add_argument("--slots", type=int, help="PLC mailbox slots (default per mode)")
    ap.add_argument("--quick", action="store_true", help="fewer parts (under a minute)")
    ap.add_argument("--loop-threads", type=int, default=0,
                    help="onnxruntime intra-op threads of the loop (0: its default, as e2e.py)")
    ap.add_argument("--nuisances", action="store_true",
                    help="big: render dust and lighting on the 5 MB views (CPU-bound)")
    args = ap.parse_args()
    parts_n, rate, slots, quick = MODES[args.mode]
    args.parts = args.parts or (quick if args.quick else parts_n)
    args.rate = rate if args.rate is None else args.rate
    args.slots = args.slots or slots
    if args.mode == "plc":
        mailbox_table(float(args.parts))
        return
    size = BIG if args.mode == "big" else None
    nuisances = args.nuisances or args.mode != "big"
    rows: dict[str, dict[str, Any]] = {}
    print(f"procgraph line: {args.parts} parts...", flush=True)
    rows["procgraph"] = run_line(args.parts, args.rate, args.slots, size, nuisances)
    print(f"single-process loop: {args.parts} parts...", flush=True)
    rows["loop"] = run_loop(args.parts, args.rate, args.slots, size, nuisances,
                            args.loop_threads)
    table(args.mode, rows, args)


if __name__ == "__main__":
    main()
