"""Issue 9 fuzz test: malformed stream entries of every class against a user agent and the
classifier, mixed with valid ones, on a real broker under a real supervisor.

Counted, not assumed: every malformed entry is in ``<stream>:dead`` (by its entry id) with a
capped reason, every valid entry is handled exactly once, no replica exits, and the peak
memory of each replica stays under a bound (a decoded image bomb would break it).
"""

from __future__ import annotations

import json
import random
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from procgraph.agents.messages import Frame, Verdict

from pgtest_agents import Item, keys, seen
from pgtest_util import wait_for
from procgraph import codec
from procgraph.brokers import EmbeddedBroker
from procgraph.constants import dead_letter_key, stream_key

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "parts-front.onnx"  # the line's own classifier model
SEED = 9
ITEMS = 2000
FRAMES = 150
#: a dead-letter reason is at most this long (the cap plus the "...[cut, N in all]" note)
REASON_MAX = 400
#: peak RSS of any replica (VmHWM); a decoded bomb adds 256 MiB or more
RSS_MAX_MB = 480

FUZZ_AGENTS = '''
"""An idle frame source: the test writes the frames into its stream itself."""
from procgraph import Agent, Output
from procgraph.agents.messages import Frame


class IdleFrames(Agent):
    """Sends nothing; its stream is fed by the test."""

    frames = Output(Frame, maxlen=100000)

    def run(self) -> None:
        while self.running:
            self.sleep(0.2)
'''


def _chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def png_bomb(side: int = 16384) -> bytes:
    """A valid 8-bit gray PNG of ``side`` x ``side`` zeros: ~260 KB that decode to 256 MiB."""
    packer = zlib.compressobj(9)
    rows = (b"\x00" * (side + 1)) * 256
    body = b"".join(packer.compress(rows) for _ in range(side // 256)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0,
                                                                0, 0))
            + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))


def jpeg_bomb(side: int = 20000) -> bytes:
    """A small gray JPEG whose frame header claims ``side`` x ``side`` (400 MB decoded)."""
    _, buf = cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))
    data = bytearray(buf.tobytes())
    at = data.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    data[at + 5:at + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def header_of(fields: dict[bytes, bytes]) -> dict[str, object]:
    return json.loads(fields[b"h"])


def with_header(fields: dict[bytes, bytes], header: object) -> dict[bytes, bytes]:
    out = dict(fields)
    out[b"h"] = json.dumps(header).encode()
    return out


def malformed(valid: dict[bytes, bytes], rng: random.Random, image: bool) -> Iterator[
        tuple[str, dict[bytes, bytes]]]:
    """(class, fields) of every malformation class, built from one valid entry."""
    h = header_of(valid)
    huge = "9" * 5000  # JSON digits: Python will not even turn them into an int
    yield "no header", {b"x": b"1"}
    yield "not json", {b"h": b"{not json"}
    yield "header not object", {b"h": b"[1, 2]"}
    yield "huge int ts_ns", {b"h": json.dumps({**h, "ts_ns": 0}).replace(
        '"ts_ns": 0', f'"ts_ns": {huge}').encode()}
    yield "huge int v", {b"h": json.dumps({**h, "v": 0}).replace('"v": 0', f'"v": {huge}').encode()}
    yield "huge int data", {b"h": json.dumps({**h, "data": {"n": 0}}).replace(
        '"n": 0', f'"n": {huge}').encode()}
    yield "utf-16 header", {**valid, b"h": json.dumps(h).encode("utf-16")}
    yield "utf-32 header", {**valid, b"h": json.dumps(h).encode("utf-32")}
    yield "cesu surrogate", {**valid, b"h": json.dumps({**h, "key": "K"}).encode().replace(
        b'"K"', b'"\xed\xa0\x80"')}
    yield "lone surrogate escape", {**valid, b"h": json.dumps({**h, "key": "\ud800"}).encode()}
    yield "string for int", with_header(valid, {**h, "ts_ns": "1"})
    yield "bool for int", with_header(valid, {**h, "ts_ns": True})
    yield "arrays list", with_header(valid, {**h, "arrays": [1]})
    yield "data list", with_header(valid, {**h, "data": [1]})
    yield "trace junk", with_header(valid, {**h, "trace": [1, "x"]})
    yield "deep nesting", {b"h": b"[" * 100_000 + b"]" * 100_000}
    yield "nan", {b"h": json.dumps(h).replace('"ts_ns": ', '"ts_ns": NaN, "x": ').encode()}
    yield "non-utf-8 bytes", {b"h": b"\xff\xfe" + json.dumps(h).encode()}
    if image:
        yield "descriptor not object", with_header(valid, {**h, "arrays": {"image": 1}})
        desc = h["arrays"]["image"]  # type: ignore[index]
        for bad in ({"dtype": "O"}, {"dtype": "<U8"}, {"shape": [-1, 4]}, {"shape": [2**62, 2**62]},
                    {"shape": "16,16"}, {"encoding": "gif"}, {"ref": "shm:1"}):
            yield f"descriptor {bad}", with_header(valid, {**h, "arrays": {
                "image": {**desc, **bad}}})
        yield "wrong byte count", {**valid, b"a:image": valid[b"a:image"][:-1]}
        yield "missing array field", {b"h": valid[b"h"]}
        for bomb_name, bomb, enc in (("png bomb", PNG_BOMB, "png"),
                                     ("jpeg bomb", JPEG_BOMB, "jpeg")):
            yield bomb_name, {**with_header(valid, {**h, "arrays": {"image": {
                "dtype": "|u1", "shape": [8, 8], "encoding": enc}}}), b"a:image": bomb}
        yield "png not png", {**with_header(valid, {**h, "arrays": {"image": {
            "dtype": "|u1", "shape": [8, 8], "encoding": "png"}}}), b"a:image": b"\x89PNG junk"}
    # random damage: a cut header is never JSON; a 0xff byte is never UTF-8
    raw = valid[b"h"]
    for _ in range(400):
        yield "truncated", {**valid, b"h": raw[:rng.randrange(1, len(raw) - 1)]}
        at = rng.randrange(len(raw))
        yield "0xff inserted", {**valid, b"h": raw[:at] + b"\xff" + raw[at:]}
        field = rng.choice(["v", "id", "key", "ts_ns", "trace", "data", "arrays"])
        # of the wrong JSON type for that field (an empty trace, or an array descriptor for
        # a name the type does not have, is a valid message)
        wrong = rng.choice({"key": [7], "trace": [{}, 1.5, None, [1]],
                            "data": [[], 1.5, None, [1]], "arrays": [[], 1.5, None, [1]]}.get(
            field, [[], {}, 1.5, None, [1], {"a": 1}]))
        yield f"wrong type {field}", with_header(valid, {**h, field: wrong})


PNG_BOMB = png_bomb()
JPEG_BOMB = jpeg_bomb()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_hostile_entries_are_all_dead_lettered_and_valid_ones_handled_once(
        valkey: EmbeddedBroker, run_graph: Callable[..., object], tmp_path: Path) -> None:
    """Issue 9 tests: every malformation class against a user agent and the classifier."""
    rng = random.Random(SEED)
    client = redis.Redis.from_url(valkey.url)
    (tmp_path / "fuzz_agents.py").write_text(FUZZ_AGENTS)
    line = f"""
name: fuzz
agents:
  src: {{class: "pgtest_agents:Numbers", params: {{count: 0}}}}
  sink: {{class: "pgtest_agents:Recorder", inputs: {{items: src.out}}}}
  cam: {{class: "fuzz_agents:IdleFrames"}}
  clf:
    class: "procgraph.agents.classifier:OnnxClassifier"
    params: {{model: "{MODEL}"}}
    inputs: {{frames: {{from: cam.frames, batch: 4, max_wait_ms: 5}}}}
    outputs: {{verdicts: {{maxlen: 100000}}}}
"""
    items_stream = stream_key("fuzz", "src", "out")
    frames_stream = stream_key("fuzz", "cam", "frames")
    verdicts = stream_key("fuzz", "clf", "verdicts")
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    good_item = {k: bytes(v) for k, v in codec.encode(Item(n=0, key="k0")).items()}
    good_frame = {k: bytes(v) for k, v in codec.encode(Frame(
        key="p0", camera="front", seq=0, capture_ns=1, image=image,
        pixel_format="Mono8")).items()}
    bad_items = list(malformed(good_item, rng, image=False))
    bad_frames = list(malformed(good_frame, rng, image=True))
    bad_frames.append(("10 MB non-utf-8 header", {b"h": b"\xff" * (10 * 1024 * 1024)}))

    with run_graph(line, redis_url=valkey.url) as sup:  # type: ignore[attr-defined]
        wait_for(lambda: client.exists(items_stream, frames_stream) == 2 and all(
            r.pid for r in sup.replicas), 30, "the line to start")
        pids = {(r.agent.name, r.index): r.pid for r in sup.replicas}
        sent_bad: dict[str, set[bytes]] = {items_stream: set(), frames_stream: set()}
        plan = ([("item", n) for n in range(ITEMS)] + [("frame", n) for n in range(FRAMES)]
                + [("bad item", i) for i in range(len(bad_items))]
                + [("bad frame", i) for i in range(len(bad_frames))])
        rng.shuffle(plan)
        for kind, n in plan:
            if kind == "item":
                client.xadd(items_stream, codec.encode(Item(n=n, key=f"k{n}")))  # type: ignore[arg-type]
            elif kind == "frame":
                client.xadd(frames_stream, codec.encode(Frame(  # type: ignore[arg-type]
                    key=f"p{n}", camera="front", seq=n, capture_ns=n + 1, image=image,
                    pixel_format="Mono8")))
            else:
                stream = items_stream if kind == "bad item" else frames_stream
                fields = (bad_items if kind == "bad item" else bad_frames)[n][1]
                sent_bad[stream].add(client.xadd(stream, fields))  # type: ignore[arg-type]
        total_bad = sum(len(v) for v in sent_bad.values())

        def dead_ids() -> dict[str, set[bytes]]:
            return {s: {f[b"dead:source_id"] for _, f in client.xrange(dead_letter_key(s))}
                    for s in sent_bad}

        def done() -> bool:
            return (seen(client, "sink") >= keys(ITEMS) and client.xlen(verdicts) >= FRAMES
                    and sum(map(len, dead_ids().values())) >= total_bad)

        # no wait_for: when something is missing, the figures below say what
        deadline = time.monotonic() + 60
        while not done() and time.monotonic() < deadline:
            time.sleep(0.2)
        handled = int(client.get("pgtest:sink:handled") or 0)
        restarts = {(r.agent.name, r.index): r.restarts for r in sup.replicas}
        now_pids = {(r.agent.name, r.index): r.pid for r in sup.replicas}
        peak = {name: _peak_rss_mb(pid) for name, pid in now_pids.items() if pid}
        dead = {s: client.xrange(dead_letter_key(s)) for s in sent_bad}
        verdict_keys = Counter(codec.decode(f, Verdict).key for _, f in client.xrange(verdicts))

    got_dead = {s: {f[b"dead:source_id"] for _, f in d} for s, d in dead.items()}
    reasons = [f[b"dead:reason"] for d in dead.values() for _, f in d]
    print(f"FUZZ items={ITEMS} frames={FRAMES} malformed={total_bad} "
          f"dead={sum(map(len, got_dead.values()))} handled={handled} "
          f"verdicts={sum(verdict_keys.values())} longest_reason={max(map(len, reasons))} "
          f"peak_rss_mb={ {f'{a}-{i}': round(v) for (a, i), v in peak.items()} }")
    assert restarts == {k: 0 for k in restarts} and now_pids == pids, "an agent exited"
    for stream, ids in sent_bad.items():
        assert got_dead[stream] == ids, (
            f"{stream}: {len(ids - got_dead[stream])} malformed entries not dead-lettered, "
            f"{len(got_dead[stream] - ids)} valid ones dead-lettered")
    assert seen(client, "sink") == keys(ITEMS) and handled == ITEMS, "valid items not once"
    assert set(verdict_keys) == {f"p{n}" for n in range(FRAMES)}
    assert set(verdict_keys.values()) == {1}, "a frame got several verdicts"
    too_long = [r[:80] for r in reasons if len(r) > REASON_MAX]
    assert not too_long, f"{len(too_long)} reasons over {REASON_MAX} bytes: {too_long[:3]}"
    assert all(b"\n" not in r for r in reasons), "a reason spans lines"
    assert max(peak.values()) < RSS_MAX_MB, f"peak RSS over {RSS_MAX_MB} MB: {peak}"
