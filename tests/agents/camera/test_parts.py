"""Tests of the synthetic part renderer and of the exported demo ONNX models."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from procgraph.agents.camera.synthetic import (
    DEFECT_KINDS,
    PartSpec,
    make_part,
    render_view,
)

MODELS = Path(__file__).resolve().parents[3] / "models"
VIEWS = ("front", "back")


def _parts(count: int, seed: int, defect_rate: float) -> list[PartSpec]:
    rng = np.random.default_rng(seed)
    return [make_part(i, rng, defect_rate) for i in range(count)]


def _model_input(view: np.ndarray, size: tuple[int, int] = (128, 128)) -> np.ndarray:
    """Preprocessing of docs/models/parts.md: grey, INTER_AREA to HxW, [0,1], (x-0.5)/0.5."""
    h, w = size
    small = cv2.resize(view, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return ((small - 0.5) / 0.5)[None]


def test_make_part_rates_and_kinds() -> None:
    parts = _parts(3000, seed=1, defect_rate=0.3)
    rate = np.mean([p.defective for p in parts])
    assert 0.27 < rate < 0.33
    kinds = {p.defect_front for p in parts} | {p.defect_back for p in parts}
    assert kinds == {None, *DEFECT_KINDS}
    both = sum(p.defect_front is not None and p.defect_back is not None for p in parts)
    assert 0 < both < rate * len(parts)
    assert not any(p.defective for p in _parts(200, seed=2, defect_rate=0.0))
    assert all(p.defective for p in _parts(200, seed=2, defect_rate=1.0))
    # the seeds a generator produces do not depend on the defect rate
    assert [p.seed for p in _parts(50, 3, 0.0)] == [p.seed for p in _parts(50, 3, 1.0)]


def test_spec_rejects_unknown_kind_and_view() -> None:
    with pytest.raises(ValueError):
        PartSpec(1, "crack", None, 0)
    with pytest.raises(ValueError):
        render_view(PartSpec(1, None, None, 0), "side")
    with pytest.raises(ValueError):
        render_view(PartSpec(1, None, None, 0), "front", channels=2)


@pytest.mark.parametrize("view", VIEWS)
def test_render_is_deterministic(view: str) -> None:
    spec = PartSpec(7, "scratch", "dent", seed=1234)
    a = render_view(spec, view)
    b = render_view(PartSpec(7, "scratch", "dent", seed=1234), view)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_view(PartSpec(7, "scratch", "dent", seed=1235), view))


@pytest.mark.parametrize(
    ("size", "channels", "shape"),
    [
        ((256, 256), 1, (256, 256)),
        ((256, 256), 3, (256, 256, 3)),
        ((1024, 1024), 1, (1024, 1024)),
        ((1024, 1024), 3, (1024, 1024, 3)),
        ((240, 320), 1, (240, 320)),
    ],
)
def test_shapes_and_dtypes(size: tuple[int, int], channels: int, shape: tuple[int, ...]) -> None:
    img = render_view(PartSpec(1, "chip", None, seed=5), "front", size=size, channels=channels)
    assert img.shape == shape
    assert img.dtype == np.uint8
    assert 20 < float(img.mean()) < 200  # a picture, not a blank frame
    assert int(img.max()) - int(img.min()) > 100


def test_colour_view_matches_grey_view() -> None:
    spec = PartSpec(1, None, "dent", seed=9)
    grey = render_view(spec, "back").astype(np.int16)
    bgr = render_view(spec, "back", channels=3)
    assert np.abs(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.int16) - grey).max() <= 16


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_defect_changes_only_a_small_region(view: str, kind: str) -> None:
    seed = 4242
    ok = render_view(PartSpec(1, None, None, seed), view).astype(np.int16)
    spec = PartSpec(1, kind if view == "front" else None, kind if view == "back" else None, seed)
    bad = render_view(spec, view).astype(np.int16)
    changed = np.abs(bad - ok) > 20
    # visible, but not huge: between 0.1% and 5% of the frame
    assert 0.001 * ok.size < changed.sum() < 0.05 * ok.size
    # a defect on one side leaves the other side's picture untouched
    other = "back" if view == "front" else "front"
    assert np.array_equal(
        render_view(spec, other), render_view(PartSpec(1, None, None, seed), other)
    )


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_every_defect_is_visible(view: str, kind: str) -> None:
    # a defect must not vanish into a bore or hole or under the O-ring groove: the label
    # "defective" has to be something an inspector can see in the picture
    rng = np.random.default_rng(31)
    for seed in rng.integers(0, 2**32, 40):
        ok = render_view(PartSpec(1, None, None, int(seed)), view, dust=False, lighting=False)
        bad = render_view(PartSpec(1, kind, kind, int(seed)), view, dust=False, lighting=False)
        changed = int((cv2.absdiff(ok, bad) > 20).sum())
        assert changed >= 50, f"{view} {kind} seed {seed}: only {changed} pixels show it"


@pytest.mark.parametrize("view", VIEWS)
def test_dust_and_lighting_do_not_change_the_part(view: str) -> None:
    spec = PartSpec(3, None, None, seed=77)
    clean = render_view(spec, view, dust=False, lighting=False).astype(np.int16)
    dusty = render_view(spec, view, dust=True, lighting=False).astype(np.int16)
    diff = np.abs(dusty - clean)
    # dust is present and visible, but only as small specks
    assert (diff > 10).sum() > 5
    assert (diff > 10).sum() < 0.01 * clean.size
    # the defect drawn on top of the same scene is identical with or without dust
    bad = PartSpec(3, "dent", "dent", seed=77)
    d_clean = render_view(bad, view, dust=False, lighting=False).astype(np.int16) - clean
    d_dusty = render_view(bad, view, dust=True, lighting=False).astype(np.int16) - dusty
    assert np.abs(d_clean - d_dusty).max() <= 90  # same place; dust may overlap a few pixels
    assert ((np.abs(d_clean) > 20) == (np.abs(d_dusty) > 20)).mean() > 0.999
    lit = render_view(spec, view, dust=False, lighting=True)
    assert not np.array_equal(lit, clean.astype(np.uint8))


@pytest.mark.parametrize("size", [(64, 96), (2048, 2448)], ids=["small", "5MB"])
def test_unlit_noise_in_whole_levels_matches_the_float_path(size: tuple[int, int]) -> None:
    """Unlit views add the noise in whole grey levels with saturation; the float path
    (add, clip, truncate) gives the same image but for a few pixels in a million, by one."""
    from procgraph.agents.camera.synthetic import render

    h, w = size
    img = np.random.default_rng(3).integers(0, 256, size, dtype=np.uint8)
    img[:8] = 0  # the saturation at both ends is exercised
    img[8:16] = 255
    got = render._finish(img, False, np.random.default_rng(1), np.random.default_rng(2))
    noise_rng = np.random.default_rng(2)
    oy, ox = int(noise_rng.integers(0, h // 2 + 1)), int(noise_rng.integers(0, w // 2 + 1))
    ref = img.astype(np.float32) + render._make_noise_tile(h, w)[oy:oy + h, ox:ox + w] * 2.5
    want = np.clip(ref, 0, 255).astype(np.uint8)
    diff = np.abs(got.astype(np.int16) - want)
    assert got.dtype == np.uint8 and got.shape == size
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-5


def test_render_speed_256() -> None:
    parts = _parts(40, seed=11, defect_rate=0.5)
    render_view(parts[0], "front")
    t0 = time.perf_counter()
    for spec in parts:
        for view in VIEWS:
            render_view(spec, view)
    per_view = (time.perf_counter() - t0) / (2 * len(parts))
    assert per_view < 0.02  # < 5 ms on an idle core; generous for busy CI machines


@pytest.mark.parametrize("view", VIEWS)
def test_onnx_model_interface(view: str) -> None:
    onnx = pytest.importorskip("onnx")
    path = MODELS / f"parts-{view}.onnx"
    assert path.exists(), f"{path} is missing: run python tools/train_demo_model.py"
    assert path.stat().st_size < 2 * 1024 * 1024
    model = onnx.load(str(path))
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import} == {"ai.onnx": 17}
    (inp,) = model.graph.input
    (out,) = model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, inp.type.tensor_type.elem_type) == ("image", onnx.TensorProto.FLOAT)
    assert dims == ["batch", 1, 128, 128]
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert (out.name, dims) == ("probs", ["batch", 2])
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["labels"] == '["ok", "defective"]' and meta["view"] == view


@pytest.mark.parametrize("view", VIEWS)
def test_onnx_models_classify_fresh_parts(view: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    path = MODELS / f"parts-{view}.onnx"
    assert path.exists(), f"{path} is missing: run python tools/train_demo_model.py"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert [o.name for o in sess.get_outputs()] == ["probs"]
    size = tuple(sess.get_inputs()[0].shape[2:])  # (H, W), fixed
    # seeds never used by the training tool (train 7, validation 8, card 20240917)
    parts = _parts(200, seed=99_001 if view == "front" else 99_002, defect_rate=0.75)
    x = np.stack([_model_input(render_view(p, view), size) for p in parts])
    y = np.array([p.defect(view) is not None for p in parts])
    assert 60 < y.sum() < 140  # both classes well represented
    probs = sess.run(["probs"], {"image": x})[0]
    assert probs.shape == (len(parts), 2)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    accuracy = float(((probs[:, 1] > 0.5) == y).mean())
    assert accuracy >= 0.95, f"{view}: accuracy {accuracy:.3f} on 200 fresh parts"
