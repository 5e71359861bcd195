"""A tiny synthetic inspection line for the HMI tests: cameras that judge themselves.

``SyntheticCamera`` draws a part per tick of the wall clock (so two camera processes agree
on the part number without talking), sends a downscaled preview and a verdict for it, both
with the part's key. The rest of the line is the real thing: the join
(``procgraph.agents.join:JoinAgent``) and the PLC writer, see ``hmi_graph.yaml``.
"""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
from procgraph.agents.messages import ModelInfo, Preview, Verdict

from procgraph import Agent, Output

MODEL = ModelInfo(name="synthetic", version="1.0", sha256="0" * 64)


def draw_part(n: int, camera: str, defective: bool, width: int, height: int) -> np.ndarray:
    """A machined disc on a moving belt; a defective one carries a dark scratch."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (38, 36, 34)
    stripe = max(8, width // 16)
    offset = (n * 3) % stripe
    for x in range(-stripe + offset, width, stripe):
        cv2.line(img, (x, 0), (x, height), (46, 44, 42), 2)
    cx = width // 2 + int(6 * math.sin(n / 5))
    cy = height // 2
    r = int(min(width, height) * 0.36)
    tint = (10, 0, 0) if camera.startswith("f") else (0, 0, 10)
    for i in range(r, 0, -2):
        level = 120 + int(90 * (1 - i / r))
        cv2.circle(img, (cx, cy), i, tuple(level + t for t in tint), -1, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), r, (200, 200, 200), 2, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), r // 4, (30, 30, 30), -1, cv2.LINE_AA)
    for k in range(6):  # bolt holes
        a = k * math.pi / 3 + n / 40
        p = (cx + int(r * 0.62 * math.cos(a)), cy + int(r * 0.62 * math.sin(a)))
        cv2.circle(img, p, max(2, r // 12), (60, 60, 60), -1, cv2.LINE_AA)
    rng = np.random.default_rng(n * 31 + len(camera))
    for _ in range(4):  # harmless dust
        p = (int(rng.integers(cx - r, cx + r)), int(rng.integers(cy - r, cy + r)))
        cv2.circle(img, p, 1, (90, 90, 90), -1)
    if defective:
        a = float(rng.uniform(0, math.pi))
        pts = [(cx + int(r * 0.2 * math.cos(a)) + int(t * r * 0.7 * math.cos(a + 0.5)),
                cy + int(r * 0.2 * math.sin(a)) + int(t * r * 0.7 * math.sin(a + 0.5))
                + int(4 * math.sin(9 * t)))
               for t in np.linspace(0.0, 1.0, 8)]
        cv2.polylines(img, [np.array(pts, np.int32)], False, (20, 20, 25), 3, cv2.LINE_AA)
    return img


class SyntheticCamera(Agent):
    """Sends a preview and a verdict per part at ``rate_hz``.

    Part ``n`` is defective on this camera when ``n % defect_every == defect_offset``; with
    ``drop_every`` > 0 the verdict of every ``drop_every``-th part is never sent.
    """

    class Params(Agent.Params):
        camera: str = "front"
        rate_hz: float = 20.0
        width: int = 320
        height: int = 240
        defect_every: int = 9
        defect_offset: int = 2
        drop_every: int = 0

    preview = Output(Preview, maxlen=50)
    verdicts = Output(Verdict)

    def run(self) -> None:
        """One part per tick of the wall clock."""
        p = self.params
        period = 1.0 / p.rate_hz
        last = -1
        while self.running:
            now = time.time()
            n = int(now / period)
            if n == last:
                self.sleep((n + 1) * period - now)
                continue
            last = n
            self._emit(n)

    def _emit(self, n: int) -> None:
        p = self.params
        key = f"part-{n}"
        seq = n % 1_000_000  # short enough to read on screen; the key stays unique
        capture_ns = time.time_ns()
        defective = n % p.defect_every == p.defect_offset
        image = draw_part(n, p.camera, defective, p.width, p.height)
        self.preview.send(Preview(camera=p.camera, seq=seq, capture_ns=capture_ns, image=image,
                                  scale=1.0, key=key))
        if p.drop_every and n % p.drop_every == 0:
            return
        sure = 0.93 + 0.05 * ((n * 7) % 10) / 10
        label = "scratch" if defective else "ok"
        score = sure if defective else 1 - sure  # P(defective), as the ONNX classifier's
        self.verdicts.send(Verdict(
            camera=p.camera, seq=seq, capture_ns=capture_ns, label=label, score=score,
            defective=defective, scores={"scratch": score, "ok": 1 - score},
            inference_ms=0.4, model=MODEL, truth=label, key=key,
        ))

