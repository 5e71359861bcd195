"""OnnxClassifier pre-processing (session.py): ROI, colour, resize, bit depth, layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from clf_models import frame, make_model
from procgraph.agents.classifier import OnnxClassifier
from procgraph.agents.messages import Frame

from procgraph.testing import run_agent


def scores_of(model: Path, frames: list[Frame], **params: object) -> list[dict[str, float]]:
    """Run the agent on frames; return each verdict's class scores."""
    out = run_agent(OnnxClassifier, {"model": str(model), **params}, {"frames": frames})
    return [v.scores for v in out["verdicts"]]  # type: ignore[attr-defined]


def test_gray_roi_and_resize(write: Callable[[str, bytes], Path]) -> None:
    model = write("gray.onnx", make_model())
    img = np.zeros((60, 80), np.uint8)
    img[10:30, 20:60] = 200  # the ROI is uniformly 200
    (whole,), (cropped,) = (scores_of(model, [frame(img)]),
                            scores_of(model, [frame(img)], roi=[20, 10, 40, 20]))
    # one output column = probability of labels[1]: here the mean of the gray tensor
    assert cropped["defective"] == pytest.approx(200 / 255, abs=1e-5)
    assert whole["defective"] == pytest.approx(200 / 255 * (20 * 40) / (60 * 80), abs=1e-3)


@pytest.mark.parametrize(("dtype", "fmt", "value"), [
    (np.uint16, "Mono12", 4095), (np.uint16, "Mono16", 65535), (np.uint16, "Mono10", 512),
    (np.uint8, "Mono8", 255),
])
def test_high_bit_depth_mono_maps_to_full_scale(
    write: Callable[[str, bytes], Path], dtype: type, fmt: str, value: int
) -> None:
    model = write("gray.onnx", make_model())
    bits = int(fmt[4:])
    img = np.full((32, 32), value, dtype)
    (s,) = scores_of(model, [frame(img, pixel_format=fmt)])
    assert s["defective"] == pytest.approx(value / (2**bits - 1), abs=1e-4)


@pytest.mark.parametrize(("color", "expected"), [
    ("rgb", (30, 20, 10)), ("bgr", (10, 20, 30)),
])
def test_colour_order_from_bgr_frames(
    write: Callable[[str, bytes], Path], color: str, expected: tuple[int, ...]
) -> None:
    model = write("rgb.onnx", make_model(channels=3))
    img = np.zeros((20, 20, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    labels = ["c0", "c1", "c2"]
    for fmt, image in (("BGR8", img), ("RGB8", img[..., ::-1].copy()),
                       ("BGRa8", np.dstack([img, np.full((20, 20), 7, np.uint8)]))):
        (s,) = scores_of(model, [frame(image, pixel_format=fmt)], color=color, labels=labels,
                         positive_label="c0")
        assert [s[c] * 255 for c in labels] == pytest.approx(list(expected), abs=1e-3), fmt


def test_colour_to_gray_and_gray_to_colour(write: Callable[[str, bytes], Path]) -> None:
    gray_model = write("gray.onnx", make_model())
    bgr = np.zeros((20, 20, 3), np.uint8)
    bgr[..., 2] = 100  # pure red
    (s,) = scores_of(gray_model, [frame(bgr, pixel_format="BGR8")])
    assert s["defective"] * 255 == pytest.approx(0.299 * 100, abs=0.6)
    rgb_model = write("rgb.onnx", make_model(channels=3))
    (s,) = scores_of(rgb_model, [frame(np.full((20, 20), 50, np.uint8))],
                     labels=["a", "b", "c"], positive_label="a")
    assert [v * 255 for v in s.values()] == pytest.approx([50, 50, 50], abs=1e-3)


def test_mean_std_nhwc_and_dynamic_size(write: Callable[[str, bytes], Path]) -> None:
    model = write("nhwc.onnx", make_model(channels=3, layout="NHWC", size=None))
    img = np.zeros((40, 40, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 0, 255, 51  # B, G, R
    with pytest.raises(ValueError, match=r"set params\.size"):
        run_agent(OnnxClassifier, {"model": str(model), "labels": ["r", "g", "b"],
                                   "positive_label": "r"})
    (s,) = scores_of(model, [frame(img, pixel_format="BGR8")], size=[24, 24],
                     labels=["r", "g", "b"], positive_label="r", color="rgb",
                     mean=[0.5, 0.5, 0.5], std=[0.5, 0.25, 0.5])
    assert s["r"] == pytest.approx((0.2 - 0.5) / 0.5, abs=1e-5)
    assert s["g"] == pytest.approx((1.0 - 0.5) / 0.25, abs=1e-5)
    assert s["b"] == pytest.approx(-1.0, abs=1e-5)


def test_fixed_batch_model_runs_in_chunks(write: Callable[[str, bytes], Path]) -> None:
    model = write("b1.onnx", make_model(batch=1))
    frames = [frame(np.full((16, 16), 10 * i, np.uint8), i) for i in range(7)]
    got = scores_of(model, frames)
    assert [s["defective"] * 255 for s in got] == pytest.approx([10 * i for i in range(7)],
                                                               abs=1e-3)
