"""Camera publishing benchmark: a camera agent vs raw XADD of the same bytes.

    python benchmarks/camera.py              # 1 MP and 5 MP mono frames
    python benchmarks/camera.py --frames 100

procgraph: a CameraAgent whose "sensor" returns a prepared Mono8 image instantly, run by
the real supervisor, publishing Frame messages (envelope + raw array) on its stream;
previews off, then on (320 px JPEG at 10 fps) to show their cost.
raw: one process doing XADD of the same image bytes with redis-py, same cap, same broker.
The rate comes from the first and last entry ids (the broker's clock) of each stream.
imaging: what procgraph.agents.imaging costs per 5 MP frame for a 320 px preview (and its
JPEG) and a full 8-bit BGR conversion, by pixel format (``--imaging-only`` runs just that).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procgraph.brokers import EmbeddedBroker  # noqa: E402
from procgraph.graph import load_graph  # noqa: E402
from procgraph.supervisor import Supervisor  # noqa: E402

SIZES = [("1 MP", 1024, 1024), ("5 MP", 2592, 1944)]
GRAPH = """
name: cambench
brokers: {{main: {{url: embedded}}}}
agents:
  cam: {{class: "bench_agents:MemoryCamera",
         params: {{width: {w}, height: {h}, count: {n}, preview_width: {pw}}}}}
"""


def _span_s(client: redis.Redis, stream: str) -> tuple[int, float]:
    info = client.xinfo_stream(stream)
    first = int(info["first-entry"][0].split(b"-")[0])
    last = int(info["last-entry"][0].split(b"-")[0])
    return int(info["entries-added"]), max(last - first, 1) / 1000


def run_agent(url: str, w: int, h: int, n: int, preview: int) -> float:
    """Frames/s a camera agent publishes."""
    client = redis.Redis.from_url(url)
    client.flushall()
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "cam.yaml"
        graph.write_text(GRAPH.format(w=w, h=h, n=n, pw=preview))
        os.environ["PYTHONPATH"] = str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")
        sup = Supervisor(load_graph(graph), redis_url=url, out=io.StringIO(), colour=False)
        sup.start()
        try:
            deadline = time.monotonic() + 300
            stream = "pg:cambench:cam:frames"
            while not (client.exists(stream)
                       and client.xinfo_stream(stream)["entries-added"] >= n):
                if time.monotonic() > deadline:
                    raise RuntimeError("camera agent did not publish in time")
                sup.poll()
                time.sleep(0.05)
        finally:
            sup.shutdown()
    added, span = _span_s(client, "pg:cambench:cam:frames")
    return (added - 1) / span


def run_raw(url: str, w: int, h: int, n: int) -> float:
    """Frames/s of a plain redis-py XADD loop with the same bytes and cap."""
    client = redis.Redis.from_url(url)
    client.flushall()
    image = np.random.default_rng(0).integers(0, 255, (h, w), np.uint8)
    cap = max(2, (512 * 2**20) // image.nbytes)
    for _ in range(n):
        client.xadd("raw:frames", {b"image": image.tobytes()}, maxlen=cap, approximate=True)
    added, span = _span_s(client, "raw:frames")
    return (added - 1) / span


def _ms(fn: Callable[[], object], repeat: int = 5) -> float:
    """Best wall time of ``fn`` in ms over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def imaging_table() -> None:
    """Preview, JPEG and to_bgr8 cost per pixel format for a 5 MP frame."""
    from procgraph.agents import imaging

    rng = np.random.default_rng(0)
    h, w = 1944, 2592
    images = {
        "Mono8": rng.integers(0, 256, (h, w), np.uint8),
        "Mono12": rng.integers(0, 4096, (h, w), np.uint16),
        "BayerRG8": rng.integers(0, 256, (h, w), np.uint8),
        "BayerRG12": rng.integers(0, 4096, (h, w), np.uint16),
        "RGBa8": rng.integers(0, 256, (h, w, 4), np.uint8),
    }
    print()
    print("| 5 MP pixel format | preview 320 px ms | + JPEG ms | to_bgr8 ms |")
    print("|---|---|---|---|")
    for fmt, img in images.items():
        small, _ = imaging.preview(img, fmt, 320)
        pv = _ms(lambda i=img, f=fmt: imaging.preview(i, f, 320))
        jpg = _ms(lambda s=small: imaging.encode_jpeg(s))
        bgr = _ms(lambda i=img, f=fmt: imaging.to_bgr8(i, f))
        print(f"| {fmt} | {pv:.1f} | {jpg:.2f} | {bgr:.1f} |")


def main() -> None:
    """Run both sizes and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200, help="frames per run")
    ap.add_argument("--imaging-only", action="store_true", help="only the imaging table")
    args = ap.parse_args()
    if args.imaging_only:
        imaging_table()
        return
    rows = []
    with EmbeddedBroker() as broker:
        for label, w, h in SIZES:
            mb = w * h / 1e6
            print(f"{label}: raw XADD...", flush=True)
            raw = run_raw(broker.url, w, h, args.frames)
            print(f"{label}: camera agent, previews off...", flush=True)
            agent = run_agent(broker.url, w, h, args.frames, 0)
            print(f"{label}: camera agent, previews on...", flush=True)
            agent_pv = run_agent(broker.url, w, h, args.frames, 320)
            rows.append((label, mb, raw, agent, agent_pv))
    print()
    print("| frame | raw XADD fps | raw MB/s | agent fps | agent MB/s | agent/raw | "
          "agent+preview fps | agent+preview/raw |")
    print("|---|---|---|---|---|---|---|---|")
    for label, mb, raw, agent, pv in rows:
        print(f"| {label} mono8 | {raw:.1f} | {raw * mb:.0f} | {agent:.1f} | {agent * mb:.0f} | "
              f"{agent / raw:.2f} | {pv:.1f} | {pv / raw:.2f} |")
    imaging_table()


if __name__ == "__main__":
    main()
