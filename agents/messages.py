"""Message types shared by the built-in agents: frames, verdicts, part outcomes."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from procgraph import Message


class Frame(Message):
    """One camera image. ``key`` is the part/frame key shared by all views of one part."""

    type_name = "procgraph.Frame"

    camera: str
    seq: int
    capture_ns: int
    image: np.ndarray
    pixel_format: str
    truth: str | None = None  # synthetic ground truth: "ok" or the defect kind


class Preview(Message):
    """A downscaled, JPEG-encoded copy of a frame for operator screens."""

    type_name = "procgraph.Preview"

    camera: str
    seq: int
    capture_ns: int
    image: np.ndarray
    scale: float = 1.0


class ModelInfo(BaseModel):
    """Which model produced a verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    sha256: str


class Verdict(Message):
    """A classifier's decision on one frame, with provenance."""

    type_name = "procgraph.Verdict"

    camera: str
    seq: int
    capture_ns: int
    label: str
    score: float
    defective: bool
    scores: dict[str, float]
    inference_ms: float
    model: ModelInfo
    truth: str | None = None


class PartOutcome(Message):
    """The joined decision on one part as written to the PLC."""

    type_name = "procgraph.PartOutcome"

    part_seq: int
    outcome: str  # ok | defective_front | defective_back | defective_both | incomplete
    reject: bool
    capture_ns: int
    verdicts: dict[str, Verdict]
    missing: list[str] = []
    plc_written_ns: int = 0
    truth_defective: bool | None = None
