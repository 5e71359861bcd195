"""One ONNX model in onnxruntime: providers, input/output discovery, pre-processing, inference.

A plain library with no SDK dependency: :class:`ModelSession` is what the agent runs a batch
through. Pixel formats are converted by ``procgraph.agents.imaging`` (the one place images
are converted); everything else here follows docs/agents/classifier.md, "Pre-processing,
step by step".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from procgraph.agents import imaging
from procgraph.agents.messages import Frame, ModelInfo

#: short provider names accepted in ``providers`` besides onnxruntime's own names
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_FORMAT_OF_COLOR = {"gray": "Mono", "rgb": "RGB", "bgr": "BGR"}

Color = Literal["gray", "rgb", "bgr"]


def choose_providers(asked: Sequence[str], log: logging.Logger) -> list[str]:
    """The asked providers (short names allowed) that this onnxruntime has, CPU if none."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen: list[str] = []
    for name in asked:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full in available:
            if full not in chosen:
                chosen.append(full)
        else:
            log.warning("execution provider %s is not available here (available: %s);"
                        " skipping it", full, ", ".join(available))
    if not chosen:
        log.warning("none of the asked providers is available: using the CPU")
        chosen = ["CPUExecutionProvider"]
    return chosen


@dataclass(frozen=True)
class SessionSpec:
    """What the params say about the model's input; None: read it from the model."""

    input_name: str | None = None
    output_name: str | None = None
    layout: Literal["NCHW", "NHWC"] | None = None
    color: Color | None = None
    size: tuple[int, int] | None = None  # w, h
    dtype: Literal["float32", "float16"] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    intra_op_threads: int = 0


@dataclass
class ModelSession:
    """A ready onnxruntime session and how to feed it."""

    session: Any
    info: ModelInfo
    input_name: str
    output_name: str
    layout: str  # NCHW | NHWC | NHW (gray without a channel axis)
    color: Color
    size: tuple[int, int]  # w, h
    dtype: type
    fixed_batch: int | None
    mean: np.ndarray | None
    std: np.ndarray | None

    @classmethod
    def load(cls, data: bytes, info: ModelInfo, spec: SessionSpec,
             providers: list[str]) -> ModelSession:
        """A new session on ``data``, its input worked out and checked by one warm-up run."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if spec.intra_op_threads:
            opts.intra_op_num_threads = spec.intra_op_threads
        session = ort.InferenceSession(data, sess_options=opts, providers=providers)
        loaded = cls.from_session(session, info, spec)
        loaded.warm_up()
        return loaded

    @classmethod
    def from_session(cls, session: Any, info: ModelInfo, p: SessionSpec) -> ModelSession:
        """Work out the input spec from the model and the params; errors say what to set."""
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        inp = inputs.get(p.input_name) if p.input_name is not None else None
        if p.input_name is not None and inp is None:
            raise ValueError(f"model has no input {p.input_name!r}; inputs: {list(inputs)}")
        inp = inp or session.get_inputs()[0]
        if p.output_name is not None and p.output_name not in outputs:
            raise ValueError(f"model has no output {p.output_name!r}; outputs: {outputs}")
        shape = [d if isinstance(d, int) and d > 0 else None for d in inp.shape]

        def dim(i: int) -> int | None:
            return shape[i] if -len(shape) <= i < len(shape) else None

        layout: str
        if len(shape) == 4:
            layout = p.layout or ("NHWC" if dim(3) in (1, 3) and dim(1) not in (1, 3) else "NCHW")
            channels = dim(1) if layout == "NCHW" else dim(3)
            hw = (dim(2), dim(3)) if layout == "NCHW" else (dim(1), dim(2))
        elif len(shape) == 3:
            layout, channels, hw = "NHW", 1, (dim(1), dim(2))
        else:
            raise ValueError(f"model input {inp.name!r} has shape {inp.shape}: expected an "
                             "image batch [N, C, H, W], [N, H, W, C] or [N, H, W]")
        color: Color = p.color or ("gray" if channels in (1, None) else "rgb")
        want = 1 if color == "gray" else 3
        if channels is not None and channels != want:
            raise ValueError(f"color {color!r} gives {want} channel(s) but the model input "
                             f"{inp.name!r} {inp.shape} ({layout}) takes {channels}")
        if p.size is not None:
            size = p.size
            if hw[0] is not None and hw[1] is not None and (hw[1], hw[0]) != size:
                raise ValueError(f"size {list(size)} does not match the model input "
                                 f"{inp.shape} ({layout}): it takes w={hw[1]}, h={hw[0]}")
        elif hw[0] is None or hw[1] is None:
            raise ValueError(f"model input {inp.name!r} {inp.shape} has no fixed size: "
                             "set params.size: [w, h]")
        else:
            size = (hw[1], hw[0])
        dtype: type = np.float32
        if p.dtype is not None:
            dtype = np.float16 if p.dtype == "float16" else np.float32
        elif inp.type in _ORT_TYPES:
            dtype = _ORT_TYPES[inp.type]
        elif inp.type != "tensor(float)":
            raise ValueError(f"model input {inp.name!r} is {inp.type}; only float32 and "
                             "float16 image inputs are supported")

        def per_channel(v: tuple[float, ...] | None) -> np.ndarray | None:
            if v is None:
                return None
            if len(v) not in (1, want):
                raise ValueError(f"mean/std {list(v)} needs 1 or {want} value(s) for {color}")
            return np.asarray(v, dtype=np.float32)

        return cls(session=session, info=info, input_name=inp.name,
                   output_name=p.output_name or outputs[0], layout=layout, color=color,
                   size=size, dtype=dtype, fixed_batch=dim(0), mean=per_channel(p.mean),
                   std=per_channel(p.std))

    # -- pre-processing ---------------------------------------------------------------------
    def _one(self, f: Frame, roi: list[int] | None) -> np.ndarray:
        """ROI, colour, resize, bit depth: one frame as float32 H, W, C on 0..255."""
        img = f.image
        if roi is not None:
            x, y, w, h = roi
            if y + h > img.shape[0] or x + w > img.shape[1]:
                raise ValueError(f"roi {roi} lies outside frame {f.key!r} of shape {img.shape}")
            img = img[y:y + h, x:x + w]
        fmt = f.pixel_format or imaging.pixel_format_of(img)
        img = imaging.to_color(img, fmt, self.color)  # same bit depth, unpacked, demosaiced
        w, h = self.size
        if img.shape[1] != w or img.shape[0] != h:
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        # the converted image is gray/rgb/bgr of the frame's bit depth: name it so
        converted = f"{_FORMAT_OF_COLOR[self.color]}{imaging.bit_depth(fmt)}"
        return imaging.to_float(img, converted, self.color)

    def preprocess(self, frames: list[Frame], roi: list[int] | None, scale: float) -> np.ndarray:
        """Frames -> one input tensor for the whole batch."""
        x: np.ndarray = np.stack([self._one(f, roi) for f in frames])  # N, H, W, C float32
        x *= np.float32(scale)
        if self.mean is not None:
            x -= self.mean
        if self.std is not None:
            x /= self.std
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        elif self.layout == "NHW":
            x = x[..., 0]
        return np.ascontiguousarray(x, dtype=self.dtype)

    # -- inference --------------------------------------------------------------------------
    def infer(self, x: np.ndarray) -> np.ndarray:
        """One session run (or fixed-size chunks when the model's batch size is fixed)."""
        b = self.fixed_batch
        if b is None or b == len(x):
            return np.asarray(self.session.run([self.output_name], {self.input_name: x})[0])
        outs = []
        for i in range(0, len(x), b):
            chunk = x[i:i + b]
            n = len(chunk)
            if n < b:  # pad the last chunk to the fixed batch size
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
            out = self.session.run([self.output_name], {self.input_name: chunk})[0]
            outs.append(np.asarray(out)[:n])
        return np.asarray(np.concatenate(outs))

    def warm_up(self) -> np.ndarray:
        """Run once on a blank image: checks the spec end to end and allocates buffers.

        Returns the model's output for that image (one frame).
        """
        w, h = self.size
        c = 1 if self.color == "gray" else 3
        shape = {"NCHW": (1, c, h, w), "NHWC": (1, h, w, c), "NHW": (1, h, w)}[self.layout]
        x: np.ndarray = np.zeros(shape, dtype=self.dtype)
        try:
            return self.infer(x)
        except Exception as exc:
            raise ValueError(f"model {self.info.name} v{self.info.version} rejects an input "
                             f"of shape {list(shape)} {np.dtype(self.dtype).name}: {exc}; check "
                             "size, color, layout and dtype") from None


def to_probs(out: np.ndarray, n: int, labels: Sequence[str], softmax: bool) -> np.ndarray:
    """Model outputs -> an ``n x len(labels)`` probability matrix.

    One output column with two labels is the probability (with ``softmax``, the logit) of
    ``labels[1]``; otherwise there must be one column per label (softmax applied if asked).
    """
    out = np.asarray(out, dtype=np.float32).reshape(n, -1)
    k = len(labels)
    if out.shape[1] == 1 and k == 2:
        p1 = 1 / (1 + np.exp(-out[:, 0])) if softmax else out[:, 0]
        return np.stack([1 - p1, p1], axis=1)
    if out.shape[1] != k:
        raise ValueError(f"the model outputs {out.shape[1]} values per frame but labels "
                         f"has {k} names ({list(labels)}): fix labels")
    if softmax:
        e = np.exp(out - out.max(axis=1, keepdims=True))
        out = e / e.sum(axis=1, keepdims=True)
    return out


__all__ = ["PROVIDER_ALIASES", "ModelSession", "SessionSpec", "choose_providers", "to_probs"]
