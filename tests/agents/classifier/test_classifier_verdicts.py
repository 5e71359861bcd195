"""OnnxClassifier (agent.py): labels, threshold, bad params, provenance and envelope."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from clf_models import constant_model, frame, make_model
from procgraph.agents.classifier import OnnxClassifier
from procgraph.agents.messages import Verdict

from procgraph import AgentContext
from procgraph.message import Hop
from procgraph.testing import AgentHarness, run_agent

REPO = Path(__file__).resolve().parents[3]


def test_softmax_threshold_and_labels(write: Callable[[str, bytes], Path]) -> None:
    # logits: ok=0, scratch=4*mean, dent=2; softmax applied by the agent
    weights = np.array([[0.0, 4.0, 0.0]])
    model = write("three.onnx", make_model(weights=weights, bias=[0.0, 0.0, 2.0]))
    frames = [frame(np.full((16, 16), v, np.uint8), i) for i, v in enumerate((0, 255))]
    params = {"model": str(model), "softmax": True, "labels": ["ok", "scratch", "dent"]}
    out = run_agent(OnnxClassifier, {**params, "positive_label": "scratch", "threshold": 0.5},
                    {"frames": frames})["verdicts"]
    dark, bright = out
    assert isinstance(dark, Verdict) and isinstance(bright, Verdict)
    assert sum(dark.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert not dark.defective and dark.label == "dent"  # best of the non-positive labels
    assert bright.defective and bright.label == "scratch"
    assert bright.score == pytest.approx(np.exp(4) / (1 + np.exp(4) + np.exp(2)), abs=1e-5)
    both = run_agent(OnnxClassifier, {**params, "positive_label": ["scratch", "dent"],
                                      "threshold": 0.9}, {"frames": frames})["verdicts"]
    assert [v.score for v in both] == pytest.approx(  # type: ignore[attr-defined]
        [1 - 1 / (2 + np.exp(2)), 1 - 1 / (1 + np.exp(4) + np.exp(2))], abs=1e-5)
    assert [v.defective for v in both] == [False, True]  # type: ignore[attr-defined]


@pytest.mark.parametrize("positive", ["defective", ["defective", "ok"]], ids=["one", "two"])
def test_a_score_equal_to_the_threshold_in_float32_is_defective(
        write: Callable[[str, bytes], Path], positive: str | list[str]) -> None:
    # a black frame: the model outputs its bias, float32(0.7) = 0.69999998..., which is
    # below the float64 threshold 0.7 but equal to it in float32, the scores' type
    if positive == "defective":  # one column: the probability of "defective"
        labels, model = ["ok", "defective"], write("one.onnx", make_model(bias=[0.7]))
    else:  # ok=0, defective=0.7, x=0: the positives sum to 0.7 in float32
        labels = ["ok", "defective", "x"]
        model = write("three.onnx", make_model(weights=np.zeros((1, 3)), bias=[0.0, 0.7, 0.0]))
    out = run_agent(OnnxClassifier, {"model": str(model), "labels": labels,
                                     "positive_label": positive, "threshold": 0.7},
                    {"frames": [frame(np.zeros((16, 16), np.uint8))]})["verdicts"]
    verdict = out[0]
    assert isinstance(verdict, Verdict)
    assert verdict.score == float(np.float32(0.7)) and verdict.score < 0.7
    assert verdict.defective


def test_wrong_label_count_and_bad_params(write: Callable[[str, bytes], Path]) -> None:
    model = write("three.onnx", make_model(channels=3))
    with AgentHarness(OnnxClassifier, {"model": str(model)}) as h, \
            pytest.raises(ValueError, match="outputs 3 values per frame but labels has 2"):
        h.feed("frames", [frame(np.zeros((8, 8, 3), np.uint8), pixel_format="BGR8")])
    with pytest.raises(ValueError, match="size"):
        run_agent(OnnxClassifier, {"model": str(model), "size": [32, 32],
                                   "labels": ["a", "b", "c"], "positive_label": "a"})
    with pytest.raises(ValueError, match="channel"):
        run_agent(OnnxClassifier, {"model": str(model), "color": "gray",
                                   "labels": ["a", "b", "c"], "positive_label": "a"})
    with pytest.raises(ValueError, match="not in labels"):
        OnnxClassifier.Params(model="m.onnx", positive_label="nok")
    with pytest.raises(ValueError, match="roi"):
        OnnxClassifier.Params(model="m.onnx", roi=[0, 0, 0, 5])
    with pytest.raises(RuntimeError, match="cannot read model"):
        run_agent(OnnxClassifier, {"model": "/nonexistent/model.onnx"})


def test_roi_outside_frame_fails_that_batch(write: Callable[[str, bytes], Path]) -> None:
    model = write("gray.onnx", make_model())
    with AgentHarness(OnnxClassifier, {"model": str(model), "roi": [0, 0, 64, 64]}) as h, \
            pytest.raises(ValueError, match="outside frame 'part-0'"):
        h.feed("frames", [frame(np.zeros((32, 32), np.uint8))])


def test_provenance_and_envelope(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = constant_model(3.0)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "parts-front.onnx").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    ctx = AgentContext(agent="clf", graph_dir=tmp_path)
    hop = Hop(agent="cam", in_ns=1, out_ns=2)
    frames = [frame(np.zeros((16, 16), np.uint8), i, truth="scratch", trace=[hop])
              for i in range(3)]
    with caplog.at_level(logging.WARNING), AgentHarness(
            OnnxClassifier, {"model": "models/parts-front.onnx",
                             "providers": ["cuda", "CPUExecutionProvider"]}, ctx) as h:
        h.feed("frames", frames)
    assert any("CUDAExecutionProvider is not available" in r.message for r in caplog.records)
    verdicts = h.sent["verdicts"]
    assert [v.key for v in verdicts] == ["part-0", "part-1", "part-2"]
    for f, v in zip(frames, verdicts, strict=True):
        assert isinstance(v, Verdict)
        assert (v.camera, v.seq, v.capture_ns, v.truth) == (f.camera, f.seq, f.capture_ns,
                                                            "scratch")
        assert v.model.name == "parts-front" and v.model.version == digest[:12]
        assert v.model.sha256 == digest
        assert v.defective and v.label == "defective"
        assert v.inference_ms > 0
        assert [x.agent for x in v.trace] == ["cam", "clf"]
    named = run_agent(OnnxClassifier, {"model": str(tmp_path / "models/parts-front.onnx"),
                                       "model_name": "front", "model_version": "2024-05"},
                      {"frames": frames[:1]})["verdicts"][0]
    assert named.model.name == "front" and named.model.version == "2024-05"  # type: ignore


@pytest.mark.skipif(not (REPO / "models" / "parts-front.onnx").is_file(),
                    reason="models/parts-front.onnx not built yet")
def test_parts_model_if_present() -> None:
    frames = [frame(np.full((120, 160), 128, np.uint8), i) for i in range(4)]
    out = run_agent(OnnxClassifier, {"model": str(REPO / "models" / "parts-front.onnx"),
                                     "mean": [0.5], "std": [0.5]}, {"frames": frames})
    assert len(out["verdicts"]) == 4
    for v in out["verdicts"]:
        assert isinstance(v, Verdict)
        assert set(v.scores) == {"ok", "defective"}
        assert sum(v.scores.values()) == pytest.approx(1.0, abs=1e-4)
