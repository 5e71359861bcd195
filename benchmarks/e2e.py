"""End-to-end benchmark of the inspection line, against a single-process baseline.

    python benchmarks/e2e.py                 # 200 parts flat out + 60 paced parts
    python benchmarks/e2e.py --parts 100 --paced 40 --rate 5

procgraph: graphs/inspection.yaml as shipped (a part trigger, synthetic front/back cameras
capturing on it, two ONNX classifiers, the join, the Modbus PLC writer, the HMI), on an
embedded Valkey, writing to a simulated PLC (a real Modbus TCP server) in this process.
baseline: one Python loop doing the same work with the same code underneath and no
framework: render both views, run both models with onnxruntime, write the outcome to the
same simulated PLC with the same register map and handshake.

Reports parts/s (trigger unthrottled), latency from capture to the PLC write (p50/p95/p99,
trigger at --rate parts/s; counted from the capture of a part's last view, the p50 from the
first view is shown too: both cameras capture on the same trigger, each when its process gets
to it) and the accuracy of what reached the PLC against ground truth.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from procgraph.agents.camera import synthetic as parts  # noqa: E402
from procgraph.agents.messages import PartOutcome  # noqa: E402
from procgraph.agents.modbus.client import PlcWriter  # noqa: E402
from procgraph.agents.modbus.sim import SimulatedPlc  # noqa: E402

from procgraph import codec  # noqa: E402
from procgraph.brokers import EmbeddedBroker, free_port  # noqa: E402
from procgraph.graph import load_graph  # noqa: E402
from procgraph.supervisor import Supervisor  # noqa: E402

GRAPH = ROOT / "graphs" / "inspection.yaml"


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def run_procgraph(count: int, rate: float) -> dict:
    """Run the shipped graph for ``count`` parts; collect what the PLC writer reported written."""
    plc_port = free_port()
    with EmbeddedBroker() as broker:
        os.environ.update({"PROCGRAPH_REDIS": broker.url, "PLC_PORT": str(plc_port),
                           "PLC_SIM": "false", "HMI_PORT": str(free_port()),
                           "PART_COUNT": str(count), "PARTS_PER_S": str(rate),
                           "JOIN_WINDOW_MS": "60000"})
        plc = SimulatedPlc("127.0.0.1", plc_port)
        plc.start_thread()
        sup = Supervisor(load_graph(GRAPH), out=io.StringIO(), colour=False)
        try:
            sup.start()
            deadline = time.monotonic() + 60 + count / max(rate, 1) * 3
            while len(plc.received) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(plc.received)}/{count} parts reached the PLC")
                sup.poll()
                time.sleep(0.1)
        finally:
            sup.shutdown()
            plc.stop_thread()
        client = redis.Redis.from_url(broker.url)
        outs = [codec.decode(f, PartOutcome) for _, f in
                client.xrange("pg:inspection:plc:written")]
    outs = [o for o in outs if int(o.key.split("-")[1]) < count and o.plc_written_ns]
    # from the capture of the part's last view: the synthetic front and back cameras run
    # unsynchronised, so the first view can wait up to one camera period for the second
    written = [(o, int(o.plc_written_ns or 0)) for o in outs]
    lat = [(w - max(v.capture_ns for v in o.verdicts.values())) / 1e6 for o, w in written]
    wait = [(w - o.capture_ns) / 1e6 for o, w in written]
    span = (max(w for _, w in written) - min(o.capture_ns for o in outs)) / 1e9
    right = sum(o.reject == o.truth_defective for o in outs)
    dup = sum(p["duplicate"] for p in plc.received)
    return {"parts": len(outs), "rate": len(outs) / span, "lat": lat, "first": wait,
            "right": right, "dup": dup,
            "incomplete": sum(o.outcome == "incomplete" for o in outs)}


class Model:
    """One ONNX classifier as a plain onnxruntime loop runs it (``threads`` 0: ORT's default)."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = self.sess.get_inputs()[0]
        self.name = inp.name
        self.hw = (int(inp.shape[2]), int(inp.shape[3]))  # NCHW, fixed H and W

    def defective(self, img: np.ndarray) -> bool:
        """Resize, normalise, run; True when the 'defective' score is at least 0.5."""
        h, w = self.hw
        x = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        x = ((x - 0.5) / 0.5)[None, None]
        probs = self.sess.run(None, {self.name: x})[0][0]
        return bool(probs[1] >= 0.5)


def defects_outcome(front: bool, back: bool) -> str:
    """The join's outcome name for the two views' defect decisions."""
    return {(False, False): "ok", (True, False): "defective_front",
            (False, True): "defective_back", (True, True): "defective_both"}[(front, back)]


def run_baseline(count: int, rate: float) -> dict:
    """The same work in one loop: render, infer, decide, write to the PLC."""
    plc_port = free_port()
    plc = SimulatedPlc("127.0.0.1", plc_port)
    plc.start_thread()
    models = {v: Model(ROOT / "models" / f"parts-{v}.onnx") for v in ("front", "back")}
    writer = PlcWriter.tcp("127.0.0.1", plc_port)
    writer.connect()
    lat, right = [], 0
    period = 1.0 / rate if rate > 0 else 0.0
    t0 = time.time_ns()
    next_at = time.monotonic()
    try:
        for n in range(count):
            if period:
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))
            capture = time.time_ns()
            spec = parts.make_part(n, np.random.default_rng([7, n]), 0.25)
            bad = {v: models[v].defective(parts.render_view(spec, v)) for v in models}
            outcome = defects_outcome(bad["front"], bad["back"])
            writer.write_outcome(writer.next_seq, f"part-{n}", outcome, outcome != "ok")
            lat.append((time.time_ns() - capture) / 1e6)
            right += (outcome != "ok") == spec.defective
    finally:
        writer.close()
        plc.stop_thread()
    span = (time.time_ns() - t0) / 1e9
    return {"parts": count, "rate": count / span, "lat": lat, "first": lat, "right": right,
            "dup": 0, "incomplete": 0}


def main() -> None:
    """Run both, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=200, help="parts for the throughput run")
    ap.add_argument("--paced", type=int, default=60, help="parts for the latency run")
    ap.add_argument("--rate", type=float, default=5.0, help="parts/s in the latency run")
    args = ap.parse_args()
    results = {}
    for name, fn in (("procgraph", run_procgraph), ("baseline", run_baseline)):
        print(f"{name}: throughput run, {args.parts} parts, cameras unthrottled...", flush=True)
        flat = fn(args.parts, 1000.0)
        print(f"{name}: latency run, {args.paced} parts at {args.rate}/s...", flush=True)
        paced = fn(args.paced, args.rate)
        results[name] = (flat, paced)
    print()
    print("| impl | parts/s (flat out) | p50 ms | p95 ms | p99 ms | p50 ms from 1st view | "
          "accuracy at PLC | duplicates | incomplete |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (flat, paced) in results.items():
        acc = (flat["right"] + paced["right"]) / (flat["parts"] + paced["parts"])
        print(f"| {name} | {flat['rate']:.1f} | {pct(paced['lat'], 50):.1f} | "
              f"{pct(paced['lat'], 95):.1f} | {pct(paced['lat'], 99):.1f} | "
              f"{pct(paced['first'], 50):.1f} | {acc:.1%} | "
              f"{flat['dup'] + paced['dup']} | {flat['incomplete'] + paced['incomplete']} |")
    ratio = results["procgraph"][0]["rate"] / results["baseline"][0]["rate"]
    print(f"\nprocgraph/baseline parts/s: {ratio:.2f}  (latency measured at {args.rate} parts/s)")


if __name__ == "__main__":
    main()
