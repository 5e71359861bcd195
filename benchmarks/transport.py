"""One-hop transport benchmark: procgraph agents vs raw redis-py on the same broker.

    python benchmarks/transport.py            # all sizes
    python benchmarks/transport.py --quick    # fewer messages

For each payload size it measures, in the same run and on the same Valkey server:
  * procgraph: a source agent sends N messages, a sink agent handles them (two OS
    processes started by the real supervisor: codec, XADD with backpressure,
    XREADGROUP, handler dispatch, XACK);
  * raw: a producer process doing XADD and a consumer process doing XREADGROUP + XACK
    with redis-py (hiredis), no procgraph code.
Throughput comes from a run that sends as fast as possible; latency (p50/p99, send to
handler) from a second run where messages come one at a time: paced at a third of that
rate, and at least 1 ms apart (the sources sleep between sends, as a real one waits for its
camera or trigger).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_agents import pace  # noqa: E402

from procgraph.brokers import EmbeddedBroker  # noqa: E402
from procgraph.graph import load_graph  # noqa: E402
from procgraph.supervisor import Supervisor  # noqa: E402

SIZES = [("64 B", 64, 20000), ("100 KB", 100_000, 3000), ("1 MB", 1_000_000, 600),
         ("5 MB", 5_000_000, 150)]


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


# -- raw redis-py --------------------------------------------------------------------
def _raw_producer(url: str, stream: str, size: int, count: int, interval_ms: float) -> None:
    client = redis.Redis.from_url(url)
    payload = os.urandom(size)
    while not client.get("raw:go"):
        time.sleep(0.01)
    next_at = time.perf_counter()
    for _ in range(count):
        if interval_ms:
            next_at += interval_ms / 1000
            pace(next_at)
        client.xadd(stream, {b"ts": str(time.time_ns()).encode(), b"d": payload},
                    maxlen=100_000, approximate=True)


def _raw_consumer(url: str, stream: str, count: int) -> None:
    client = redis.Redis.from_url(url)
    lat: list[float] = []
    first = 0.0
    nbytes = 0
    while len(lat) < count:
        reply = client.xreadgroup("g", "c", {stream: ">"}, count=64, block=1000)
        for _, entries in reply or []:
            ids = []
            for entry_id, fields in entries:
                now = time.time_ns()
                sent = int(fields[b"ts"])
                if not lat:
                    first = sent / 1e9
                lat.append((now - sent) / 1e6)
                nbytes += len(fields[b"d"])
                ids.append(entry_id)
            client.xack(stream, "g", *ids)
    client.set("raw:result", json.dumps({"lat_ms": lat, "first_send": first,
                                         "last_recv": time.time_ns() / 1e9, "nbytes": nbytes}))


def run_raw(url: str, size: int, count: int, interval_ms: float) -> dict:
    """One raw redis-py run in two processes; returns the consumer's record."""
    client = redis.Redis.from_url(url)
    client.flushall()
    stream = "raw:stream"
    client.xgroup_create(stream, "g", id="$", mkstream=True)
    ctx = mp.get_context("spawn")
    cons = ctx.Process(target=_raw_consumer, args=(url, stream, count))
    prod = ctx.Process(target=_raw_producer, args=(url, stream, size, count, interval_ms))
    cons.start()
    prod.start()
    time.sleep(0.5)
    client.set("raw:go", 1)
    prod.join()
    cons.join()
    return json.loads(client.get("raw:result"))


# -- procgraph ---------------------------------------------------------------------------
GRAPH = """
name: bench
brokers: {{main: {{url: embedded}}}}
agents:
  src: {{class: "bench_agents:BlobSource",
         params: {{size: {size}, count: {count}, interval_ms: {interval}}}}}
  sink: {{class: "bench_agents:BlobSink", inputs: {{blobs: src.out}}, params: {{count: {count}}}}}
"""


def run_procgraph(url: str, size: int, count: int, interval_ms: float) -> dict:
    """One procgraph run: source and sink agents under the real supervisor."""
    client = redis.Redis.from_url(url)
    client.flushall()
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "bench.yaml"
        graph.write_text(GRAPH.format(size=size, count=count, interval=interval_ms))
        os.environ["PYTHONPATH"] = str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")
        out = io.StringIO()
        sup = Supervisor(load_graph(graph), redis_url=url, out=out, colour=False)
        sup.start()
        try:
            deadline = time.monotonic() + 30
            while not client.exists("pg:bench:hb:sink:0") and time.monotonic() < deadline:
                sup.poll()
                time.sleep(0.05)
            client.set("bench:go", 1)
            deadline = time.monotonic() + 120
            while not client.exists("bench:result"):
                if time.monotonic() > deadline:  # say why: the line's own output
                    raise RuntimeError("procgraph run did not finish in 120 s; the line said:\n"
                                       + out.getvalue()[-4000:])
                sup.poll()
                time.sleep(0.05)
        finally:
            sup.shutdown()
    return json.loads(client.get("bench:result"))


def summarize(rec: dict, count: int) -> dict:
    """Messages/s and MB/s over the whole run."""
    span = max(rec["last_recv"] - rec["first_send"], 1e-9)
    return {"msgs": count / span, "mbs": rec["nbytes"] / span / 1e6}


def main() -> None:
    """Run every size, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer messages per size")
    ap.add_argument("--sizes", nargs="+", choices=[s[0].replace(" ", "") for s in SIZES],
                    help="only these payloads (e.g. 64B 5MB)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per cell, procgraph and raw alternating (medians kept)")
    ap.add_argument("--aof", choices=["everysec", "always"], default=None,
                    help="the broker keeps an AOF, as `procgraph run` does by default "
                    "(default here: in memory)")
    args = ap.parse_args()
    rows = []
    data = tempfile.TemporaryDirectory(prefix="pg-bench-aof-") if args.aof else None
    with EmbeddedBroker(data_dir=data.name if data else None,
                        appendfsync=args.aof or "everysec") as broker:
        for label, size, count in SIZES:
            if args.sizes and label.replace(" ", "") not in args.sizes:
                continue
            if args.quick:
                count = max(50, count // 5)
            thr: dict[str, list[dict]] = {"procgraph": [], "raw": []}
            for _ in range(args.repeat):  # alternated, so a noisy spell hits both sides
                for name, fn in (("procgraph", run_procgraph), ("raw", run_raw)):
                    print(f"  {label:>6} {name:<9} throughput run ({count} msgs)...", flush=True)
                    thr[name].append(summarize(fn(broker.url, size, count, 0.0), count))
            cells = {name: {k: statistics.median(t[k] for t in runs) for k in runs[0]}
                     for name, runs in thr.items()}
            rate = min(cells["procgraph"]["msgs"], cells["raw"]["msgs"])
            interval = max(1.0, 3000.0 / rate)  # one at a time: no backlog to batch
            lat_count = max(30, min(count, int(3000 / interval)))
            lat: dict[str, list[tuple[float, float]]] = {"procgraph": [], "raw": []}
            for _ in range(args.repeat):  # alternated, so a noisy spell hits both sides
                for name, fn in (("procgraph", run_procgraph), ("raw", run_raw)):
                    print(f"  {label:>6} {name:<9} latency run ({lat_count} msgs, one every "
                          f"{interval:.2f} ms)...", flush=True)
                    rec = fn(broker.url, size, lat_count, interval)
                    lat[name].append((_pct(rec["lat_ms"], 50), _pct(rec["lat_ms"], 99)))
            for name, runs in lat.items():
                cells[name]["p50"] = statistics.median(r[0] for r in runs)
                cells[name]["p99"] = statistics.median(r[1] for r in runs)
            rows.append((label, cells))
    if data is not None:
        data.cleanup()
    print()
    print(f"broker: {'AOF ' + args.aof if args.aof else 'in memory'}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    print("| payload | impl | msgs/s | MB/s | p50 ms | p99 ms | msgs/s vs raw | p50 vs raw |")
    print("|---|---|---|---|---|---|---|---|")
    for label, cells in rows:
        pg, raw = cells["procgraph"], cells["raw"]
        for name in ("procgraph", "raw"):
            c = cells[name]
            ratios = (f"{pg['msgs'] / raw['msgs']:.2f} | {pg['p50'] / raw['p50']:.2f}"
                      if name == "procgraph" else " | ")
            print(f"| {label} | {name} | {c['msgs']:,.0f} | {c['mbs']:,.1f} | {c['p50']:.3f} | "
                  f"{c['p99']:.3f} | {ratios} |")


if __name__ == "__main__":
    main()
