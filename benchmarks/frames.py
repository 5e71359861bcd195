"""5 MB frames one hop: procgraph through shared memory vs inline vs a plain ring vs redis-py.

    python benchmarks/frames.py            # 5 MB frames (2448x2048 mono8), about 1-2 min
    python benchmarks/frames.py --quick    # fewer frames (< 60 s)

In the same run, on the same Valkey server (in memory):
  * procgraph shm: a source agent sends frames, a sink agent reads them (two processes under
    the real supervisor); the pixels go through the claim-check ring in /dev/shm, the entry
    carries a reference (docs/wire-format.md, "Frames through shared memory");
  * procgraph inline: the same graph with ``shm: false`` (the pixels in the stream entry);
  * shm ring: the baseline, two processes and a lossless single-producer ring of frame slots
    in /dev/shm, no broker, no procgraph code;
  * raw redis-py: XADD of the frame, XREADGROUP + XACK, two processes;
  * dora-rs (optional, when $DORA or /work/dora-venv/bin/dora exists; never a dependency of
    procgraph): ``dora run`` of a Python sender and receiver node (pyarrow arrays).
Each sink touches the first and last byte of every frame and checks its sequence number (the
first 8 bytes). Throughput: as fast as the producer can send; latency (creation -> sink, p50
and p99): a paced run at a rate every implementation keeps up with. Drops: frames sent minus
frames received intact.
"""

from __future__ import annotations

import argparse
import io
import json
import mmap
import multiprocessing as mp
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procgraph import Agent, Input, Message, Output  # noqa: E402

SIZE = 2448 * 2048  # 5,013,504 bytes, one mono8 frame of a 5 MP camera
WAIT_S = 120.0
#: the claim-check ring of the source's port (the default is 64 MiB: 12 frames of 5 MB, too
#: few for a sink that acknowledges a read batch with its next read at full speed)
RING_MB = 256


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def _pace(until: float) -> None:
    left = until - time.perf_counter()
    if left > 0.0002:
        time.sleep(left - 0.0001)
    while time.perf_counter() < until:
        pass


def _frame(size: int) -> np.ndarray:
    return np.frombuffer(np.random.default_rng(0).bytes(size), np.uint8).copy()


def _check(arr: np.ndarray | memoryview, n: int) -> bool:
    return bool(int.from_bytes(bytes(arr[:8]), "little") == n and arr[-1] == arr[-1])


def _in_shared_memory(arr: np.ndarray) -> bool:
    """Whether an array views a mapped file (the claim-check ring), not entry bytes."""
    base: object = arr
    while isinstance(base, np.ndarray):
        base = base.base
    while isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)


#: frames a source cycles through: a queued (not yet written) inline entry still views its
#: frame (the send buffer holds up to 64 MiB plus the batch in flight), so a frame is not
#: rewritten before 40 later ones were sent, as a camera hands out fresh buffers
POOL = 40


# -- procgraph agents (imported by the replicas as module ``frames``) ------------------------
class BenchFrame(Message):
    """A numbered frame."""

    n: int
    pixels: np.ndarray


class FrameSource(Agent):
    """Waits for ``<prefix>:go``, then sends ``count`` frames (paced when interval_ms > 0)."""

    class Params(Agent.Params):
        size: int = SIZE
        count: int = 100
        interval_ms: float = 0.0
        prefix: str = "fb"

    out = Output(BenchFrame, maxlen=10_000, max_mb=4096)

    def run(self) -> None:
        client = self.context.redis()
        while self.running and not client.get(f"{self.params.prefix}:go"):
            self.sleep(0.01)
        pool = [_frame(self.params.size) for _ in range(POOL)]
        next_at = time.perf_counter()
        for n in range(self.params.count):
            if not self.running:
                return
            if self.params.interval_ms:
                next_at += self.params.interval_ms / 1000
                _pace(next_at)
            px = pool[n % POOL]
            px[:8] = np.frombuffer(n.to_bytes(8, "little"), np.uint8)
            self.out.send(BenchFrame(n=n, pixels=px))
        while self.running:
            self.sleep(0.2)


class FrameSink(Agent):
    """Checks and times each frame; writes its record when ``count`` arrived."""

    class Params(Agent.Params):
        count: int = 100
        prefix: str = "fb"

    frames = Input(BenchFrame)

    def setup(self) -> None:
        self.lat: list[float] = []
        self.first = 0.0
        self.bad = 0
        self.shm = 0

    def on_frames(self, msg: BenchFrame) -> None:
        if not _check(msg.pixels, msg.n):
            self.bad += 1
        self.shm += _in_shared_memory(msg.pixels)
        now = time.time_ns()
        if not self.lat:
            self.first = msg.ts_ns / 1e9
        self.lat.append((now - msg.ts_ns) / 1e6)
        if len(self.lat) == self.params.count:
            self.context.redis().set(f"{self.params.prefix}:result", json.dumps(
                {"lat_ms": self.lat, "first_send": self.first, "last_recv": now / 1e9,
                 "bad": self.bad, "shm": self.shm}))


GRAPH = """
name: framebench
shm: {shm}
agents:
  src: {{class: "frames:FrameSource", outputs: {{out: {{shm_mb: {ring_mb}}}}},
         params: {{size: {size}, count: {count}, interval_ms: {interval}}}}}
  sink: {{class: "frames:FrameSink", inputs: {{frames: src.out}}, params: {{count: {count}}}}}
"""


def run_procgraph(url: str, size: int, count: int, interval_ms: float, shm: bool) -> dict:
    """One procgraph run under the real supervisor; the sink's record."""
    from procgraph.delivery.shmfiles import clean_line_rings
    from procgraph.graph import load_graph
    from procgraph.supervisor import Supervisor

    client = redis.Redis.from_url(url)
    client.flushall()
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "framebench.yaml"
        graph.write_text(GRAPH.format(shm=str(shm).lower(), size=size, count=count,
                                      interval=interval_ms, ring_mb=RING_MB))
        os.environ["PYTHONPATH"] = str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")
        plan = load_graph(graph)
        urls = dict.fromkeys(plan.brokers, url)  # the supervisor's: --redis for every broker
        clean_line_rings(plan, None, stopping=False, urls=urls)
        sup = Supervisor(plan, redis_url=url, out=io.StringIO(), colour=False)
        sup.start()
        try:
            _wait(sup.poll, lambda: bool(client.exists("pg:framebench:hb:sink:0")), 30)
            client.set("fb:go", 1)
            _wait(sup.poll, lambda: bool(client.exists("fb:result")), WAIT_S)
        finally:
            sup.shutdown()
            clean_line_rings(plan, None, stopping=True, urls=urls)
    return _result(client.get("fb:result"), count)


def _wait(poll: object, done: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:  # type: ignore[operator]
        poll()  # type: ignore[operator]
        time.sleep(0.02)


def _result(raw: bytes | None, count: int) -> dict:
    rec = json.loads(raw) if raw else {"lat_ms": [], "first_send": 0, "last_recv": 1, "bad": 0}
    rec["drops"] = count - len(rec["lat_ms"]) + rec.get("bad", 0)
    return rec


# -- raw redis-py ---------------------------------------------------------------------------
def _raw_producer(url: str, size: int, count: int, interval_ms: float) -> None:
    client = redis.Redis.from_url(url)
    px = _frame(size)
    while not client.get("raw:go"):
        time.sleep(0.01)
    next_at = time.perf_counter()
    for n in range(count):
        if interval_ms:
            next_at += interval_ms / 1000
            _pace(next_at)
        px[:8] = np.frombuffer(n.to_bytes(8, "little"), np.uint8)
        client.xadd("raw:frames", {b"ts": str(time.time_ns()).encode(), b"n": str(n).encode(),
                                   b"d": memoryview(px)}, maxlen=400, approximate=True)


def _raw_consumer(url: str, count: int, out: mp.Queue) -> None:
    client = redis.Redis.from_url(url)
    lat, bad, first = [], 0, 0.0
    deadline = time.monotonic() + WAIT_S
    while len(lat) < count and time.monotonic() < deadline:
        reply = client.xreadgroup("g", "c", {"raw:frames": ">"}, count=16, block=1000)
        for _, entries in reply or []:
            for _, fields in entries:
                sent = int(fields[b"ts"])
                first = first or sent / 1e9
                lat.append((time.time_ns() - sent) / 1e6)
                bad += not _check(memoryview(fields[b"d"]), int(fields[b"n"]))
            client.xack("raw:frames", "g", *[e for e, _ in entries])
    out.put({"lat_ms": lat, "first_send": first, "last_recv": time.time_ns() / 1e9,
             "bad": bad})


def run_raw(url: str, size: int, count: int, interval_ms: float) -> dict:
    """XADD / XREADGROUP + XACK with redis-py in two processes."""
    client = redis.Redis.from_url(url)
    client.flushall()
    client.xgroup_create("raw:frames", "g", id="$", mkstream=True)
    return _two(_raw_producer, (url, size, count, interval_ms), _raw_consumer, (url, count),
                lambda: client.set("raw:go", 1), count)


# -- a plain shared-memory ring ---------------------------------------------------------------
_RING_SLOTS = 8
_HEAD = struct.Struct("<QQ")  # head (frames written), tail (frames read)
_SLOT_HEAD = struct.Struct("<QQ")  # ts_ns, seq


def _ring(path: str, size: int) -> mmap.mmap:
    slot = 64 + size
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, 64 + _RING_SLOTS * slot)
    finally:
        os.close(fd)


def _ring_producer(path: str, size: int, count: int, interval_ms: float) -> None:
    mm, px = _ring(path, size), _frame(size)
    slot = 64 + size
    while _HEAD.unpack_from(mm, 0)[1] != 2**63:  # the consumer's "go"
        time.sleep(0.001)
    _HEAD.pack_into(mm, 0, 0, 0)
    next_at = time.perf_counter()
    for n in range(count):
        if interval_ms:
            next_at += interval_ms / 1000
            _pace(next_at)
        while n - _HEAD.unpack_from(mm, 0)[1] >= _RING_SLOTS:  # full: wait (lossless)
            time.sleep(0.00005)
        at = 64 + (n % _RING_SLOTS) * slot
        px[:8] = np.frombuffer(n.to_bytes(8, "little"), np.uint8)
        ts = time.time_ns()
        mm[at + 64:at + 64 + size] = memoryview(px)
        _SLOT_HEAD.pack_into(mm, at, ts, n)
        struct.pack_into("<Q", mm, 0, n + 1)  # published after the bytes


def _ring_consumer(path: str, size: int, count: int, out: mp.Queue) -> None:
    mm = _ring(path, size)
    view = memoryview(mm)
    slot = 64 + size
    _HEAD.pack_into(mm, 0, 0, 2**63)
    while _HEAD.unpack_from(mm, 0)[1] == 2**63:
        time.sleep(0.001)
    lat, bad, first = [], 0, 0.0
    deadline = time.monotonic() + WAIT_S
    for n in range(count):
        while struct.unpack_from("<Q", mm, 0)[0] <= n:
            if time.monotonic() > deadline:
                break
            time.sleep(0.00005)
        else:
            at = 64 + (n % _RING_SLOTS) * slot
            ts, seq = _SLOT_HEAD.unpack_from(mm, at)
            first = first or ts / 1e9
            bad += seq != n or not _check(view[at + 64:at + 64 + size], n)
            lat.append((time.time_ns() - ts) / 1e6)
            struct.pack_into("<Q", mm, 8, n + 1)
            continue
        break
    del view
    out.put({"lat_ms": lat, "first_send": first, "last_recv": time.time_ns() / 1e9,
             "bad": bad})


def run_ring(size: int, count: int, interval_ms: float) -> dict:
    """The baseline: a lossless ring of frame slots in /dev/shm, two processes."""
    path = f"/dev/shm/framebench-ring-{os.getpid()}"
    with open(path, "wb") as f:
        f.truncate(64 + _RING_SLOTS * (64 + size))
    try:
        return _two(_ring_producer, (path, size, count, interval_ms), _ring_consumer,
                    (path, size, count), lambda: None, count)
    finally:
        os.unlink(path)


def _two(prod_fn: object, prod_args: tuple, cons_fn: object, cons_args: tuple,
         go: object, count: int) -> dict:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    cons = ctx.Process(target=cons_fn, args=(*cons_args, out))  # type: ignore[arg-type]
    prod = ctx.Process(target=prod_fn, args=prod_args)  # type: ignore[arg-type]
    cons.start()
    prod.start()
    time.sleep(0.5)
    go()  # type: ignore[operator]
    rec = out.get(timeout=WAIT_S + 30)
    prod.join(30)
    cons.join(30)
    return _result(json.dumps(rec).encode(), count)


# -- dora-rs (optional; never a project dependency) ------------------------------------------
DORA_SENDER = """'''dora-rs sender: COUNT frames of SIZE bytes, paced by INTERVAL_MS.'''
import os
import time

import numpy as np
import pyarrow as pa
from dora import Node

SIZE = int(os.environ.get("SIZE", 2448 * 2048))
COUNT = int(os.environ.get("COUNT", 2000))
INTERVAL = float(os.environ.get("INTERVAL_MS", 0)) / 1000
node = Node()
time.sleep(1.0)  # let the receiver subscribe
pool = [np.frombuffer(np.random.default_rng(i).bytes(SIZE), np.uint8).copy() for i in range(4)]
next_at = time.perf_counter()
for n in range(COUNT):
    if INTERVAL:
        next_at += INTERVAL
        while time.perf_counter() < next_at:
            time.sleep(0.0001)
    px = pool[n % 4]
    px[:8] = np.frombuffer(n.to_bytes(8, "little"), np.uint8)
    node.send_output("frame", pa.array(px), {"ts": str(time.time_ns()), "n": str(n)})
time.sleep(0.5)  # the last frames reach the receiver before this node is gone
"""

DORA_RECEIVER = """'''dora-rs receiver: times and checks each frame; a JSON record to OUT.'''
import json
import os
import time

from dora import Node

COUNT = int(os.environ.get("COUNT", 2000))
node = Node()
lat, bad, first, last = [], 0, 0.0, 0.0
deadline = time.monotonic() + 120
for event in node:
    if event["type"] == "INPUT":
        now = time.time_ns()
        meta = event["metadata"]
        arr = event["value"].to_numpy(zero_copy_only=True)
        n = int(meta["n"])
        bad += int.from_bytes(bytes(arr[:8]), "little") != n
        ts = int(meta["ts"])
        first = first or ts / 1e9
        lat.append((now - ts) / 1e6)
        last = now / 1e9
        if len(lat) >= COUNT:
            break
    elif event["type"] == "STOP":
        break
    if time.monotonic() > deadline:
        break
with open(os.environ["OUT"], "w") as f:
    json.dump({"lat_ms": lat, "first_send": first, "last_recv": last, "bad": bad}, f)
"""

DORA_FLOW = """
nodes:
  - id: sender
    path: sender.py
    outputs: [frame]
  - id: receiver
    path: receiver.py
    inputs:
      frame: {source: sender/frame, queue_size: 10000}
"""


def dora_binary() -> str | None:
    """The dora CLI of a separate venv ($DORA, or /work/dora-venv/bin/dora), if any."""
    path = os.environ.get("DORA", "/work/dora-venv/bin/dora")
    return path if os.access(path, os.X_OK) else None


def run_dora(dora: str, size: int, count: int, interval_ms: float) -> dict:
    """``dora run`` of a sender and a receiver node (its Python from dora's venv)."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("sender.py", DORA_SENDER), ("receiver.py", DORA_RECEIVER),
                           ("dataflow.yml", DORA_FLOW)):
            Path(tmp, name).write_text(text)
        out = Path(tmp, "result.json")
        env = {**os.environ, "PATH": f"{Path(dora).parent}{os.pathsep}{os.environ['PATH']}",
               "SIZE": str(size), "COUNT": str(count), "INTERVAL_MS": str(interval_ms),
               "OUT": str(out)}
        env.pop("VIRTUAL_ENV", None)
        subprocess.run([dora, "run", "dataflow.yml", "--stop-after", str(int(WAIT_S))],
                       cwd=tmp, env=env, capture_output=True, timeout=WAIT_S + 60)
        return _result(out.read_bytes() if out.exists() else None, count)


# -- the table --------------------------------------------------------------------------------
def main() -> None:
    """Measure each implementation (throughput, then paced latency), print the table."""
    from procgraph.brokers import EmbeddedBroker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer frames (< 60 s)")
    ap.add_argument("--size", type=int, default=SIZE, help="frame bytes (default 5,013,504)")
    ap.add_argument("--no-dora", action="store_true", help="skip dora-rs even if installed")
    args = ap.parse_args()
    n_fast, n_raw, n_lat = (400, 60, 40) if args.quick else (2000, 300, 100)
    impls = {
        "procgraph shm": (n_fast, lambda url, c, i: run_procgraph(url, args.size, c, i, True)),
        "procgraph inline": (n_raw, lambda url, c, i: run_procgraph(url, args.size, c, i,
                                                                   False)),
        "shm ring (baseline)": (n_fast, lambda url, c, i: run_ring(args.size, c, i)),
        "raw redis-py": (n_raw, lambda url, c, i: run_raw(url, args.size, c, i)),
    }
    dora = None if args.no_dora else dora_binary()
    if dora is not None:
        impls["dora-rs (shared memory)"] = (n_fast, lambda url, c, i: run_dora(
            dora, args.size, c, i))
    else:
        print("  dora-rs: not measured (no $DORA or /work/dora-venv/bin/dora; it is optional: "
              "python -m venv /work/dora-venv && /work/dora-venv/bin/pip install dora-rs "
              "dora-rs-cli pyarrow numpy)")
    rows: dict[str, dict] = {}
    with EmbeddedBroker() as broker:
        for name, (count, fn) in impls.items():
            print(f"  {name:<20} throughput ({count} frames)...", flush=True)
            rec = fn(broker.url, count, 0.0)
            span = max(rec["last_recv"] - rec["first_send"], 1e-9)
            rows[name] = {"msgs": len(rec["lat_ms"]) / span, "drops": rec["drops"],
                          "shm": rec.get("shm")}
        slowest = min(r["msgs"] for r in rows.values())
        interval = max(5.0, 2000.0 / max(slowest, 1e-3))
        for name, (_, fn) in impls.items():
            print(f"  {name:<20} latency ({n_lat} frames, one every {interval:.1f} ms)...",
                  flush=True)
            rec = fn(broker.url, n_lat, interval)
            rows[name].update(p50=_pct(rec["lat_ms"], 50), p99=_pct(rec["lat_ms"], 99))
            rows[name]["drops"] += rec["drops"]
    base = rows["shm ring (baseline)"]["msgs"]
    raw = rows["raw redis-py"]["msgs"]
    print()
    print(f"frames of {args.size:,} bytes, one hop; latency paced at one every "
          f"{interval:.1f} ms; load {os.getloadavg()[0]:.2f}")
    print("| impl | frames/s | p50 ms | p99 ms | drops | vs shm ring | vs raw redis-py |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['msgs']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['drops']} |"
              f" {r['msgs'] / base:.2f} | {r['msgs'] / raw:.2f} |")
    shm = rows["procgraph shm"].get("shm")
    print(f"\nprocgraph shm (ring {RING_MB} MiB): {shm} of the throughput run's frames "
          "arrived as shared-memory views (the rest inline: ring full)")


if __name__ == "__main__":
    main()
