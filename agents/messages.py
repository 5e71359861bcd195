"""Message types shared by the built-in agents: triggers, frames, verdicts, part outcomes."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from procgraph import Message


class Trigger(Message):
    """One part passing the cameras (a photo-eye): every camera on it captures one frame.

    ``key`` is the part key (``part-<seq>``) that every view of the part carries; ``seq`` the
    trigger's counter; ``trigger_ns`` when the part was triggered (wall clock, ns).
    """

    type_name = "procgraph.Trigger"

    seq: int
    trigger_ns: int


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
    """The joined decision on one part, from the join; a PLC writer sets ``part_seq`` and
    ``plc_written_ns`` on the copy it emits once the PLC has the part.

    ``outcome``: ``ok``, ``defective_<view>`` (one bad view), ``defective_both`` (both views
    of a two-view join) or ``incomplete`` (a view missing or late: fail-safe), see
    :mod:`procgraph.agents.join.rules`. ``verdicts`` and ``missing`` are keyed by view name.
    """

    type_name = "procgraph.PartOutcome"

    outcome: str
    reject: bool
    capture_ns: int
    verdicts: dict[str, Verdict]
    missing: list[str] = []
    part_seq: int | None = None  # the PLC's sequence number, None until written
    plc_written_ns: int | None = None  # when the PLC had it, None until written
    truth_defective: bool | None = None
