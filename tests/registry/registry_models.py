"""Tiny valid ONNX models for the registry tests (a helper module, not tests)."""

from __future__ import annotations

import numpy as np
import onnx  # the [test] extra has it: these tests run, never skip
from onnx import TensorProto, helper, numpy_helper


def tiny_model(value: float) -> bytes:
    """A valid ONNX model ``probs = image_mean * 0 + value``; different values, different bytes."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 16, 16])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["probs"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((1, 2), np.float32), "W"),
             numpy_helper.from_array(np.array([1 - value, value], np.float32), "B")]
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def padded_model(value: float, size: int) -> bytes:
    """A valid model like :func:`tiny_model` of about ``size`` bytes (a long doc_string)."""
    model = onnx.load_model_from_string(tiny_model(value))
    model.doc_string = "x" * max(0, size - len(tiny_model(value)))
    return bytes(model.SerializeToString())


def garbage_0x08(size: int = 4096, seed: int = 9) -> list[bytes]:
    """``size`` bytes starting with 0x08 (what an ONNX file starts with) that are no model:
    random bytes, and bytes laid out like a ModelProto (ir_version, a graph field) whose
    graph is random."""
    rng = np.random.default_rng(seed)
    random = b"\x08" + rng.integers(0, 256, size - 1, dtype=np.uint8).tobytes()
    body = size - 5  # 08 08 3a <2-byte length> <body>
    shaped = bytes([0x08, 0x08, 0x3A, 0x80 | (body & 0x7F), body >> 7]) + \
        rng.integers(0, 256, body, dtype=np.uint8).tobytes()
    assert len(random) == len(shaped) == size
    return [random, shaped]
