"""OnnxClassifier (pre-processing, labels, provenance), the model registry, hot swap."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from procgraph.agents.classifier import OnnxClassifier
from procgraph.agents.messages import Frame, Verdict

from procgraph import codec
from procgraph.agent import AgentContext
from procgraph.brokers import EmbeddedBroker
from procgraph.constants import heartbeat_key, model_blob_key, model_channel, stream_key
from procgraph.errors import ProcgraphError
from procgraph.message import Hop
from procgraph.models import ModelIntegrityError, ModelRegistry, ModelRegistryError
from procgraph.testing import AgentHarness, run_agent

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


# -- tiny ONNX models ---------------------------------------------------------------------------
def make_model(
    *,
    channels: int = 1,
    size: tuple[int, int] | None = (16, 16),
    layout: str = "NCHW",
    weights: np.ndarray | None = None,
    bias: list[float] | None = None,
    softmax: bool = False,
    batch: int | str = "N",
) -> bytes:
    """``out = [softmax](mean_per_channel(image) @ weights + bias)``: outputs reveal inputs.

    With the default identity weights the output is the per-channel mean of the
    pre-processed tensor, so a test can check pre-processing through the whole agent.
    """
    w_ = np.eye(channels, dtype=np.float32) if weights is None else weights.astype(np.float32)
    b_ = np.zeros(w_.shape[1], np.float32) if bias is None else np.array(bias, np.float32)
    h, w = size if size is not None else ("H", "W")
    shape = [batch, channels, h, w] if layout == "NCHW" else [batch, h, w, channels]
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, w_.shape[1]])
    nodes = []
    src = "image"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]))
        src = "nchw"
    nodes += [
        helper.make_node("GlobalAveragePool", [src], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits" if softmax else "probs"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    graph = helper.make_graph(nodes, "tiny", [x], [y],
                              [numpy_helper.from_array(w_, "W"), numpy_helper.from_array(b_, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def constant_model(defective_logit: float) -> bytes:
    """A gray 16x16 model whose verdict does not depend on the image."""
    return make_model(weights=np.zeros((1, 2)), bias=[0.0, defective_logit], softmax=True)


def frame(image: np.ndarray, n: int = 0, pixel_format: str = "Mono8", **kw: object) -> Frame:
    """A frame with recognisable envelope fields."""
    return Frame(key=f"part-{n}", camera="front", seq=n, capture_ns=1_000 + n, image=image,
                 pixel_format=pixel_format, **kw)


def scores_of(model: Path, frames: list[Frame], **params: object) -> list[dict[str, float]]:
    """Run the agent on frames; return each verdict's class scores."""
    out = run_agent(OnnxClassifier, {"model": str(model), **params}, {"frames": frames})
    return [v.scores for v in out["verdicts"]]  # type: ignore[attr-defined]


@pytest.fixture()
def write(tmp_path: Path) -> Callable[[str, bytes], Path]:
    """Write model bytes into tmp_path."""
    def _write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path
    return _write


# -- pre-processing -------------------------------------------------------------------------------
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


# -- labels, threshold, provenance -----------------------------------------------------------------
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


# -- the model registry on a real broker -----------------------------------------------------------
@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded valkey-server for the registry tests of this module."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture()
def client(broker: EmbeddedBroker) -> Iterator[redis.Redis]:
    """A client on an empty broker."""
    c = redis.Redis.from_url(broker.url)
    c.flushall()
    yield c
    c.close()


def test_registry_push_list_current_fetch(client: redis.Redis, tmp_path: Path) -> None:
    reg = ModelRegistry(client)
    v1, v2 = constant_model(-3.0), constant_model(3.0)
    path = tmp_path / "m.onnx"
    path.write_bytes(v1)
    assert reg.current("parts") is None and reg.list() == []
    r1 = reg.push("parts", path)
    r2 = reg.push("parts", v2)
    r3 = reg.push("parts", v1, version="exp-7")
    r4 = reg.push("parts", v2)
    assert [r.version for r in (r1, r2, r3, r4)] == ["1", "2", "exp-7", "3"]
    assert r1.sha256 == hashlib.sha256(v1).hexdigest() and r1.size == len(v1)
    assert r1.pushed <= r2.pushed <= time.time()
    assert reg.current("parts") == r4
    listed = reg.list("parts")
    assert [(r.version, r.current) for r in listed] == [
        ("1", False), ("2", False), ("exp-7", False), ("3", True)]
    reg.push("other", v1)
    assert reg.names() == ["other", "parts"] and len(reg.list()) == 5
    assert reg.fetch("parts", "2") == v2 and reg.fetch("parts", "exp-7") == v1
    with pytest.raises(ModelRegistryError, match="already has version '2'"):
        reg.push("parts", v1, version="2")
    with pytest.raises(ModelRegistryError, match="no version '9'"):
        reg.fetch("parts", "9")
    with pytest.raises(ModelRegistryError, match="not valid"):
        reg.push("bad name", v1)


def test_registry_rejects_non_onnx(client: redis.Redis, tmp_path: Path) -> None:
    reg = ModelRegistry(client)
    for data in (b"", b"definitely not a model", b"\x08\x07" + b"\xff" * 20):
        with pytest.raises(ModelRegistryError, match="ONNX"):
            reg.push("parts", data)
    with pytest.raises(ModelRegistryError, match="cannot read"):
        reg.push("parts", tmp_path / "missing.onnx")
    assert reg.list() == []


def test_registry_rollback_and_events(client: redis.Redis) -> None:
    reg = ModelRegistry(client)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(model_channel("parts"))
    try:
        reg.push("parts", constant_model(-3.0))
        reg.push("parts", constant_model(3.0))
        reg.push("parts", constant_model(1.0))
        assert reg.rollback("parts").version == "2"
        assert reg.rollback("parts").version == "1"
        assert reg.current("parts").version == "1"  # type: ignore[union-attr]
        with pytest.raises(ModelRegistryError, match="nothing to roll back"):
            reg.rollback("parts")
        with pytest.raises(ModelRegistryError, match="no model 'nope'"):
            reg.rollback("nope")
        assert reg.push("parts", constant_model(2.0)).version == "4"
        events = []
        deadline = time.monotonic() + 5
        while len(events) < 6 and time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=0.5)
            if msg is not None:
                events.append(json.loads(msg["data"]))
        assert [(e["event"], e["version"]) for e in events] == [
            ("push", "1"), ("push", "2"), ("push", "3"), ("rollback", "2"), ("rollback", "1"),
            ("push", "4")]
    finally:
        pubsub.close()


def test_registry_detects_corrupt_bytes(client: redis.Redis) -> None:
    reg = ModelRegistry(client)
    reg.push("parts", constant_model(1.0))
    client.set(model_blob_key("parts", "1"), constant_model(2.0))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        reg.fetch("parts", "1")
    assert issubclass(ModelIntegrityError, ProcgraphError)


def test_model_cli(broker: EmbeddedBroker, client: redis.Redis, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from procgraph.cli.main import app

    runner = CliRunner()
    (tmp_path / "a.onnx").write_bytes(constant_model(-1.0))
    (tmp_path / "b.onnx").write_bytes(b"garbage")

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["model", *args, "--redis", broker.url])
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result.exit_code, result.output

    assert run("push", "parts", str(tmp_path / "a.onnx"))[0] == 0
    code, out = run("push", "parts", str(tmp_path / "a.onnx"), "--version", "v2")
    assert code == 0 and "version v2 is current" in out
    code, out = run("list")
    assert code == 0 and "parts" in out and "v2" in out
    code, out = run("rollback", "parts")
    assert code == 0 and "version 1 is current again" in out
    for args, text in ((("push", "parts", str(tmp_path / "b.onnx")), "not an ONNX model"),
                       (("push", "parts", str(tmp_path / "none.onnx")), "no such file"),
                       (("rollback", "parts"), "nothing to roll back"),
                       (("list", "nope"), "no model 'nope'")):
        code, out = run(*args)
        assert code == 1 and text in out and "Traceback" not in out, args
    result = runner.invoke(app, ["model", "list", "--redis", "redis://127.0.0.1:1"])
    assert result.exit_code == 1 and "cannot reach the broker" in result.output


# -- hot swap ------------------------------------------------------------------------------
def test_follows_registry_between_batches(broker: EmbeddedBroker, client: redis.Redis) -> None:
    reg = ModelRegistry(client)
    reg.push("parts", constant_model(-3.0))
    clients: list[redis.Redis] = []

    def factory() -> redis.Redis:
        clients.append(redis.Redis.from_url(broker.url))
        return clients[-1]

    ctx = AgentContext(agent="clf", redis_factory=factory)
    img = np.zeros((16, 16), np.uint8)
    try:
        with AgentHarness(OnnxClassifier, {"model": "registry:parts", "poll_s": 0.1}, ctx) as h:
            h.feed("frames", [frame(img, i) for i in range(8)])
            reg.push("parts", constant_model(3.0))
            n = 8
            deadline = time.monotonic() + 10
            while h.sent["verdicts"][-1].model.version != "2":  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the agent never swapped to version 2"
                h.feed("frames", [frame(img, n + i) for i in range(4)])
                n += 4
            reg.rollback("parts")
            deadline = time.monotonic() + 10
            while h.sent["verdicts"][-1].model.version != "1":  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the agent never rolled back to version 1"
                h.feed("frames", [frame(img, n + i) for i in range(4)])
                n += 4
            assert h.agent.swaps == 2  # type: ignore[attr-defined]
    finally:
        for c in clients:
            c.close()
    verdicts = h.sent["verdicts"]
    assert [v.key for v in verdicts] == [f"part-{i}" for i in range(n)]
    versions = [v.model.version for v in verdicts]  # type: ignore[attr-defined]
    for i in range(0, n, 4):  # a batch never mixes two models
        assert len(set(versions[i:i + 4])) == 1
    for v in verdicts:
        assert v.defective == (v.model.version == "2")  # type: ignore[attr-defined]


def test_registry_model_missing_is_a_clear_error(broker: EmbeddedBroker,
                                                 client: redis.Redis) -> None:
    ctx = AgentContext(agent="clf", redis_factory=lambda: client)
    with pytest.raises(RuntimeError, match="procgraph model push nope"):
        run_agent_ctx(ctx, {"model": "registry:nope"})


def run_agent_ctx(ctx: AgentContext, params: dict[str, object]) -> None:
    """Set up and tear down an agent with a context (run_agent has no context argument)."""
    with AgentHarness(OnnxClassifier, params, ctx):
        pass


CAMERA_MODULE = '''
"""A paced source of numbered frames that waits for a go key (test helper)."""
import time

import numpy as np
from procgraph import Agent, Output
from procgraph.agents.messages import Frame


class GatedCamera(Agent):
    class Params(Agent.Params):
        count: int = 100
        rate_hz: float = 100.0
        go_key: str = "test:go"

    frames = Output(Frame)

    def run(self) -> None:
        client = self.context.redis()
        while self.running and not client.exists(self.params.go_key):
            self.sleep(0.05)
        next_at = time.monotonic()
        for n in range(self.params.count):
            if not self.running:
                return
            image = np.full((24, 24), n % 256, np.uint8)
            self.frames.send(Frame(key=f"p{n}", camera="cam", seq=n,
                                   capture_ns=time.time_ns(), image=image,
                                   pixel_format="Mono8"))
            next_at += 1.0 / self.params.rate_hz
            self.sleep(next_at - time.monotonic())
        while self.running:
            self.sleep(0.2)
'''


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``cond`` until it holds; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow
def test_hot_swap_under_load_in_a_real_graph(
    broker: EmbeddedBroker, client: redis.Redis, tmp_path: Path
) -> None:
    from procgraph.graph import load_graph
    from procgraph.supervisor import Supervisor

    count = 800
    (tmp_path / "swap_test_camera.py").write_text(CAMERA_MODULE)
    (tmp_path / "graph.yaml").write_text(textwrap.dedent(f"""\
        name: swaptest
        brokers:
          main: {{url: "{broker.url}"}}
        agents:
          cam:
            class: "swap_test_camera:GatedCamera"
            params: {{count: {count}, rate_hz: 200}}
            # a small cap: the lossless writer trims and checks room many times meanwhile
            outputs: {{frames: {{maxlen: 64}}}}
          clf:
            class: "procgraph.agents.classifier:OnnxClassifier"
            params: {{model: "registry:parts", poll_s: 0.5}}
            inputs: {{frames: {{from: cam.frames, batch: 4, max_wait_ms: 5}}}}
            outputs: {{verdicts: {{maxlen: 100000}}}}
        """))
    reg = ModelRegistry(client)
    reg.push("parts", constant_model(-4.0))  # v1 says ok to everything
    out = io.StringIO()
    sup = Supervisor(load_graph(tmp_path / "graph.yaml"), out=out, colour=False)
    thread = threading.Thread(target=sup.run, name="supervisor", daemon=True)
    verdict_stream = stream_key("swaptest", "clf", "verdicts")
    thread.start()
    try:
        wait_for(lambda: client.exists(heartbeat_key("swaptest", "clf", 0)) > 0, 20,
                 f"the classifier to start\n{out.getvalue()}")
        client.set("test:go", 1)
        wait_for(lambda: client.xlen(verdict_stream) >= 100, 20, "the first verdicts")
        pushed = reg.push("parts", constant_model(4.0))  # v2 says defective to everything
        wait_for(lambda: client.xlen(verdict_stream) >= count, 30,
                 f"all verdicts\n{out.getvalue()}")
    finally:
        sup.stopping.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    verdicts = [codec.decode(fields, Verdict) for _, fields in client.xrange(verdict_stream)]
    keys = Counter(v.key for v in verdicts)
    missing = sorted({f"p{n}" for n in range(count)} - set(keys), key=lambda k: int(k[1:]))
    twice = sorted(k for k, c in keys.items() if c > 1)
    assert not missing and not twice, (
        f"{len(missing)} frame(s) without a verdict: {missing[:10]}; {len(twice)} with "
        f"several: {twice[:10]}; {len(verdicts)} verdicts\n{out.getvalue()}")
    versions = [v.model.version for v in verdicts]  # type: ignore[attr-defined]
    first_v2 = versions.index(pushed.version)
    assert 100 <= first_v2 < count, "the swap did not happen mid-stream"
    assert set(versions[:first_v2]) == {"1"} and set(versions[first_v2:]) == {"2"}
    for v in verdicts:
        assert isinstance(v, Verdict)
        assert v.defective == (v.model.version == "2"), "verdict names the wrong model"
        assert v.model.sha256 == reg.record("parts", v.model.version).sha256
        assert [h.agent for h in v.trace] == ["cam", "clf"]
    assert "swapped model parts: v1" in out.getvalue()
