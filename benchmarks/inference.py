"""OnnxClassifier fed from a stream vs a plain onnxruntime loop, same frames, same model.

    python benchmarks/inference.py [--frames 1000] [--batches 1 8] [--threads 1|0|auto] [--quick]

The agent side is the real thing: a real broker (embedded valkey-server), the frames in a
stream, an AgentRunner hosting the classifier (in a thread of this process), verdicts written
to their stream. The raw side is what one would write by hand: cv2.resize, normalise, stack,
``session.run`` in a loop over the same frames in memory. Both use the same model
(models/parts-front.onnx if present, else a generated 3-conv CNN with the same input spec)
and the same onnxruntime defaults.

Reported per batch size: frames/s, p50/p99 latency of a frame inside the classifier (agent:
read from the stream -> verdict sent, i.e. its trace hop; raw: batch start -> result), CPU
per frame (agent: this process, hosting the runner, plus the broker; raw: this process) and
the agent/raw throughput ratio.

``--threads``: ``1`` (default) gives both sides one onnxruntime and OpenCV thread; ``0``
leaves onnxruntime's defaults on both sides (a pool per core, spinning); ``auto`` leaves the
agent's threading params unset, so it derives them as in a line (docs/agents/classifier.md,
"Threads"), and gives the raw loop the same settings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from procgraph.agents.classifier.session import Threading
from procgraph.agents.messages import Frame, Verdict

from procgraph import codec
from procgraph.brokers import EmbeddedBroker
from procgraph.constants import stream_key
from procgraph.graph import load_graph
from procgraph.runtime import AgentRunner
from procgraph.transport import connect
from procgraph.transport.shmring import RING_PREFIX, SHM_DIR

REPO = Path(__file__).resolve().parents[1]
PARTS_MODEL = REPO / "models" / "parts-front.onnx"
SIZE = 64  # input size of the generated stand-in model


def generated_model() -> bytes:
    """A small CNN with the parts models' interface: image [N,1,64,64] -> probs [N,2]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits = [init("w1", 8, 1, 3, 3), init("b1", 8), init("w2", 16, 8, 3, 3), init("b2", 16),
             init("w3", 32, 16, 3, 3), init("b3", 32), init("w4", 2, 32), init("b4", 2)]
    graph = helper.make_graph(
        nodes, "bench-cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def make_frames(n: int, width: int, height: int) -> list[Frame]:
    """Gray frames with a bright part and a few random blobs, all different."""
    rng = np.random.default_rng(1)
    frames = []
    for i in range(n):
        img = rng.integers(0, 40, (height, width), dtype=np.uint8)
        cv2.circle(img, (width // 2, height // 2), min(width, height) // 3, 180, -1)
        for _ in range(3):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.circle(img, (x, y), 4, int(rng.integers(0, 255)), -1)
        frames.append(Frame(key=f"f{i}", camera="bench", seq=i, capture_ns=time.time_ns(),
                            image=img, pixel_format="Mono8"))
    return frames


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of values."""
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# -- the raw loop ---------------------------------------------------------------------------------
def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by this process, or by ``pid``."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_loop(model: bytes, frames: list[Frame], batch: int,
             threading_: Threading) -> tuple[float, list[float], float]:
    """Hand-written pre-processing + session.run; returns frames/s, per-frame latencies and
    CPU ms per frame."""
    import onnxruntime as ort

    opts = threading_.options()
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    h, w = (int(d) for d in session.get_inputs()[0].shape[2:4])  # the model's input size
    session.run(None, {name: np.zeros((batch, 1, h, w), np.float32)})
    latencies: list[float] = []
    cpu0 = cpu_s()
    t_start = time.perf_counter()
    for i in range(0, len(frames), batch):
        t0 = time.perf_counter()
        chunk = frames[i:i + batch]
        x = np.stack([cv2.resize(f.image, (w, h), interpolation=cv2.INTER_AREA)
                      for f in chunk]).astype(np.float32)
        x = ((x / 255.0 - 0.5) / 0.5)[:, None, :, :]
        session.run(None, {name: x})
        ms = (time.perf_counter() - t0) * 1000
        latencies += [ms] * len(chunk)
    fps = len(frames) / (time.perf_counter() - t_start)
    return fps, latencies, (cpu_s() - cpu0) * 1000 / len(frames)


# -- the agent ------------------------------------------------------------------------------------
SOURCE = '''
from procgraph import Agent, Output
from procgraph.agents.messages import Frame


class Fed(Agent):
    """Stands for the camera; the benchmark writes its stream itself."""

    frames = Output(Frame)

    def run(self) -> None:
        while self.running:
            self.sleep(0.5)
'''


def agent_run(model_path: Path, frames: list[Frame], batch: int, url: str,
              workdir: Path, threads: int | None,
              broker_pid: int | None = None) -> tuple[float, list[float], float]:
    """Fill a stream with the frames, let an AgentRunner classify them all.

    Returns frames/s, per-frame latencies and CPU ms per frame (this process and the
    broker, from the runner's start to the last verdict). ``threads`` None: the agent's
    threading params are left unset (derived).
    """
    name = f"bench{batch}"
    threads_param = "" if threads is None else f", intra_op_threads: {threads}"
    (workdir / "bench_source.py").write_text(SOURCE)
    graph = workdir / f"{name}.yaml"
    graph.write_text(textwrap.dedent(f"""\
        name: {name}
        brokers: {{main: {{url: "{url}"}}}}
        agents:
          cam: {{class: "bench_source:Fed", outputs: {{frames: {{maxlen: 100000}}}}}}
          clf:
            class: "procgraph.agents.classifier:OnnxClassifier"
            params: {{model: "{model_path}", mean: [0.5], std: [0.5]{threads_param}}}
            inputs: {{frames: {{from: cam.frames, batch: {batch}, max_wait_ms: 5,
                               start: "0"}}}}
            outputs: {{verdicts: {{maxlen: 100000}}}}
        """))
    client = connect(url)
    frames_key = stream_key(name, "cam", "frames")
    verdicts_key = stream_key(name, "clf", "verdicts")
    pipe = client.pipeline(transaction=False)
    for i, f in enumerate(frames):
        pipe.xadd(frames_key, codec.encode(f))
        if i % 100 == 99:
            pipe.execute()
    pipe.execute()
    runner = AgentRunner(load_graph(graph), "clf", 0, {"main": url})
    cpu0 = cpu_s() + (cpu_s(broker_pid) if broker_pid else 0.0)
    thread = threading.Thread(target=runner.run, name="clf", daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    done = 0
    while done < len(frames):
        if time.monotonic() > deadline or not thread.is_alive():
            raise SystemExit(f"the agent classified only {done}/{len(frames)} frames")
        time.sleep(0.05)
        now = int(client.xlen(verdicts_key))
        if now // 250 != done // 250:
            print(f"  agent batch {batch}: {now}/{len(frames)} verdicts", flush=True)
        done = now
    cpu_ms = (cpu_s() + (cpu_s(broker_pid) if broker_pid else 0.0) - cpu0) * 1000 / len(frames)
    runner.stop_event.set()
    thread.join(timeout=30)
    for path in SHM_DIR.glob(f"{RING_PREFIX}{name}.*.reader-clf"):  # what the supervisor
        path.unlink(missing_ok=True)  # removes at stop: this reader's presence file
    verdicts = [codec.decode(fields, Verdict) for _, fields in client.xrange(verdicts_key)]
    client.delete(frames_key, verdicts_key)
    client.close()
    hops = [v.trace[-1] for v in verdicts]
    first, last = min(h.out_ns for h in hops), max(h.out_ns for h in hops)
    fps = (len(hops) - 1) / ((last - first) / 1e9)
    return fps, [(h.out_ns - h.in_ns) / 1e6 for h in hops], cpu_ms


def main() -> None:
    """Run both sides at each batch size and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeat", type=int, default=3, help="runs per side; the median is kept")
    ap.add_argument("--threads", default="1",
                    help="onnxruntime intra-op and OpenCV threads, both sides: a number "
                    "(0: onnxruntime's defaults) or auto (the agent derives them)")
    ap.add_argument("--quick", action="store_true", help="300 frames, one run per side")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.repeat = min(args.frames, 300), 1
    # the benchmark's graph: the classifier and the stand-in camera on this node
    auto = Threading.choose(intra=None, inter=None, spinning=None, parallel=False,
                            cpus=len(os.sched_getaffinity(0)), replicas_on_node=2,
                            class_replicas_on_node=1)
    agent_threads = None if args.threads == "auto" else int(args.threads)
    raw_threading = auto if agent_threads is None else Threading(intra_op_threads=agent_threads)
    cv_threads = raw_threading.intra_op_threads
    if cv_threads:
        cv2.setNumThreads(cv_threads)
    import logging

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        workdir = Path(tmp)
        if PARTS_MODEL.is_file():
            model_path, what = PARTS_MODEL, str(PARTS_MODEL.relative_to(REPO))
        else:
            model_path, what = workdir / "generated.onnx", "a generated 3-conv CNN"
            model_path.write_bytes(generated_model())
        model = model_path.read_bytes()
        print(f"model: {what}; {args.frames} frames {args.width}x{args.height} Mono8 "
              f"-> model input size; {args.repeat} run(s) per side; "
              f"threads {args.threads} ({raw_threading.describe()})",
              flush=True)
        frames = make_frames(args.frames, args.width, args.height)
        rows = []
        with EmbeddedBroker() as broker:
            for batch in args.batches:
                raw_runs, agent_runs = [], []
                for r in range(args.repeat):
                    print(f"batch {batch}, run {r + 1}/{args.repeat}: raw loop", flush=True)
                    raw_runs.append(raw_loop(model, frames, batch, raw_threading))
                    print(f"batch {batch}, run {r + 1}/{args.repeat}: agent", flush=True)
                    agent_runs.append(agent_run(
                        model_path, frames, batch, broker.url, workdir, agent_threads,
                        broker.proc.pid if broker.proc is not None else None))
                raw = sorted(raw_runs, key=lambda x: x[0])[len(raw_runs) // 2]
                agent = sorted(agent_runs, key=lambda x: x[0])[len(agent_runs) // 2]
                rows.append((batch, raw, agent))
    print()
    print("| batch | side | frames/s | p50 ms | p99 ms | CPU ms/frame | agent/raw |")
    print("|---|---|---|---|---|---|---|")
    for batch, raw, agent in rows:
        print(f"| {batch} | raw onnxruntime loop | {raw[0]:,.0f} | {pct(raw[1], 50):.3f} | "
              f"{pct(raw[1], 99):.3f} | {raw[2]:.2f} | |")
        print(f"| {batch} | OnnxClassifier agent | {agent[0]:,.0f} | {pct(agent[1], 50):.3f} | "
              f"{pct(agent[1], 99):.3f} | {agent[2]:.2f} | {agent[0] / raw[0]:.2f} |")
    worst = min(a[0] / r[0] for _, r, a in rows)
    print(f"\nlowest agent/raw ratio: {worst:.2f} (target >= 0.95); threads {args.threads}; "
          f"median of "
          f"{args.repeat} run(s), frames/s measured first->last verdict")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
