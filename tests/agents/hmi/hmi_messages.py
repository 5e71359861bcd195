"""Message factories for the HMI tests: previews, verdicts and part outcomes of a 2-camera line."""

from __future__ import annotations

import time

import cv2
import numpy as np
from procgraph.agents.messages import ModelInfo, PartOutcome, Preview, Verdict

MODEL = ModelInfo(name="m", version="3", sha256="ab" * 32)


def preview(camera: str = "front", seq: int = 1, key: str = "", gray: bool = False) -> Preview:
    """A flat grey preview of part ``seq`` (key ``p<seq>`` unless given)."""
    shape = (60, 80) if gray else (60, 80, 3)
    image = np.full(shape, 120, np.uint8)
    return Preview(camera=camera, seq=seq, capture_ns=time.time_ns(), image=image,
                   key=key or f"p{seq}")


def verdict(camera: str = "front", seq: int = 1, defective: bool = False, key: str = "") -> Verdict:
    """A verdict on part ``seq``: ``scratch`` when defective, else ``ok``."""
    label = "scratch" if defective else "ok"
    return Verdict(camera=camera, seq=seq, capture_ns=seq * 1_000_000, label=label, score=0.9,
                   defective=defective, scores={label: 0.9}, inference_ms=0.5, model=MODEL,
                   key=key or f"p{seq}")


def outcome(seq: int, kind: str = "ok", cameras: tuple[str, ...] = ("front", "back"),
            key: str = "", written: bool = True) -> PartOutcome:
    """The outcome of part ``seq``; ``written=False`` leaves part_seq/plc_written_ns unset."""
    bad = {"defective_front": {"front"}, "defective_back": {"back"},
           "defective_both": {"front", "back"}}.get(kind, set())
    sides = {c: verdict(c, seq, c in bad) for c in cameras}
    missing = [] if kind != "incomplete" else ["back"]
    if missing:
        sides.pop("back", None)
    extra = {"part_seq": seq, "plc_written_ns": time.time_ns()} if written else {}
    return PartOutcome(key=key or f"p{seq}", outcome=kind, reject=kind != "ok",
                       capture_ns=time.time_ns(), verdicts=sides, missing=missing, **extra)


def decodes(jpeg: bytes) -> np.ndarray:
    """The decoded BGR image of a JPEG; fails the test if it does not decode."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a decodable JPEG"
    return img
