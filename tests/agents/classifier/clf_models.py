"""Tiny ONNX models and frames for the classifier tests (a helper module, not tests)."""

from __future__ import annotations

import numpy as np
import onnx  # the [test] extra has it: these tests run, never skip
from onnx import TensorProto, helper, numpy_helper
from procgraph.agents.messages import Frame


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
