"""One ONNX model in onnxruntime: providers, input/output discovery, pre-processing, inference.

A plain library with no SDK dependency: :class:`ModelSession` is what the agent runs a batch
through. Pixel formats are converted by ``procgraph.agents.imaging`` (the one place images
are converted); everything else here follows docs/agents/classifier.md, "Pre-processing,
step by step".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    threading: Threading | None = None  # None: onnxruntime's defaults


@dataclass(frozen=True)
class Threading:
    """How onnxruntime may use the CPUs: its thread pools and whether they spin.

    ``intra_op_threads`` / ``inter_op_threads`` 0 and ``allow_spinning`` None leave
    onnxruntime's own defaults (one intra-op thread per physical core, spinning on).
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    allow_spinning: bool | None = None
    parallel: bool = False  # ExecutionMode.ORT_PARALLEL (the inter-op pool is used)

    @classmethod
    def choose(cls, *, intra: int | None, inter: int | None, spinning: bool | None,
               parallel: bool, cpus: int, replicas_on_node: int,
               class_replicas_on_node: int) -> Threading:
        """The threading for one replica: what the params set, the rest derived.

        Alone on its node (one replica), onnxruntime's defaults. In a multi-process line,
        the classifier replicas on the node share the CPUs, less one kept for the other
        agents if there are any: ``intra = max(1, (cpus - others) // classifiers)``
        (``others`` is 1 when the node runs replicas of other agents, else 0); the pools
        do not spin (a spinning pool burns a core that the line's other processes need);
        one inter-op thread.
        """
        if replicas_on_node <= 1:
            return cls(intra or 0, inter or 0, spinning, parallel)
        others = 1 if replicas_on_node > class_replicas_on_node else 0
        auto_intra = max(1, (cpus - others) // max(1, class_replicas_on_node))
        return cls(auto_intra if intra is None else intra, 1 if inter is None else inter,
                   False if spinning is None else spinning, parallel)

    def options(self) -> Any:
        """These settings as ``onnxruntime.SessionOptions``."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.intra_op_threads:
            opts.intra_op_num_threads = self.intra_op_threads
        if self.inter_op_threads:
            opts.inter_op_num_threads = self.inter_op_threads
        if self.parallel:
            opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        if self.allow_spinning is not None:
            flag = "1" if self.allow_spinning else "0"
            opts.add_session_config_entry("session.intra_op.allow_spinning", flag)
            opts.add_session_config_entry("session.inter_op.allow_spinning", flag)
        return opts

    def describe(self) -> str:
        """One line for the log, e.g. ``intra-op 1, inter-op 1, spinning off``."""
        def n(v: int) -> str:
            return str(v) if v else "default"

        spin = {None: "default", True: "on", False: "off"}[self.allow_spinning]
        mode = ", parallel" if self.parallel else ""
        return (f"intra-op {n(self.intra_op_threads)}, inter-op {n(self.inter_op_threads)}, "
                f"spinning {spin}{mode}")


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
    #: per scale: ``-mean / std`` and the gains per full scale (see :meth:`preprocess`)
    _affine_cache: dict[float, tuple[np.ndarray | None, dict[float | None, np.ndarray]]] = \
        field(default_factory=dict, init=False, repr=False)

    @classmethod
    def load(cls, data: bytes, info: ModelInfo, spec: SessionSpec,
             providers: list[str]) -> ModelSession:
        """A new session on ``data``, its input worked out and checked by one warm-up run."""
        import onnxruntime as ort

        opts = (spec.threading or Threading()).options()
        opts.log_severity_level = 3
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
    def _one(self, f: Frame, roi: list[int] | None) -> tuple[np.ndarray, float | None]:
        """ROI, colour, resize: one frame at its bit depth, and its full-scale value.

        The full scale (255 for 8 bits, 4095 for 12...) is None for float frames, which
        ``imaging.to_float`` brings to 0..255 itself.
        """
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
        bits = imaging.bit_depth(fmt)
        if img.dtype.kind != "u":  # float frames: 0..1 -> 0..255, as imaging.to_float does
            converted = f"{_FORMAT_OF_COLOR[self.color]}{bits}"
            return imaging.to_float(img, converted, self.color), None
        full = 2 ** min(bits, 8 * img.dtype.itemsize) - 1
        if full != np.iinfo(img.dtype).max:  # e.g. 12 bits in uint16: clip stray high bits
            img = np.minimum(img, img.dtype.type(full))
        return img, float(full)

    def prepare(self, f: Frame, roi: list[int] | None, scale: float) -> np.ndarray:
        """One frame's slice of the input tensor: its layout and dtype, no batch axis
        (``preprocess`` of a batch of one, without the batch axis)."""
        x: np.ndarray = np.empty(self._frame_shape(), dtype=np.float32)
        self._fill(x, f, roi, scale)
        return x if self.dtype == np.float32 else x.astype(self.dtype)

    def preprocess(self, frames: list[Frame], roi: list[int] | None, scale: float) -> np.ndarray:
        """Frames -> one input tensor for the whole batch.

        Each frame is written straight into its place in the tensor (its layout, float32)
        in one pass: ``x = pixels * (255 / full) * scale / std - mean / std``, the same
        numbers as docs/agents/classifier.md's steps in fewer passes.
        """
        x: np.ndarray = np.empty((len(frames), *self._frame_shape()), dtype=np.float32)
        for i, f in enumerate(frames):
            self._fill(x[i], f, roi, scale)
        return x if self.dtype == np.float32 else x.astype(self.dtype)

    def _frame_shape(self) -> tuple[int, ...]:
        w, h = self.size
        c = 1 if self.color == "gray" else 3
        return {"NCHW": (c, h, w), "NHWC": (h, w, c), "NHW": (h, w)}[self.layout]

    def _fill(self, xi: np.ndarray, f: Frame, roi: list[int] | None, scale: float) -> None:
        """Write frame ``f`` into ``xi``, its float32 slice of the input tensor."""
        w, h = self.size
        c = 1 if self.color == "gray" else 3
        bias, gains = self._affine(scale)
        img, full = self._one(f, roi)
        if self.layout == "NCHW":
            dst = xi.transpose(1, 2, 0)  # H, W, C view of C, H, W
        elif self.layout == "NHWC":
            dst = xi
        else:
            dst = xi[:, :, None]
        gain = gains.get(full)
        if gain is None:
            gain = gains[full] = (np.float32(scale) * np.float32(255.0 / full if full else 1)
                                  / self._std()).astype(np.float32)
        np.multiply(img.reshape(h, w, c), gain, out=dst, casting="unsafe")
        if bias is not None:
            dst += bias

    def _std(self) -> np.ndarray:
        return self.std if self.std is not None else np.ones(1, np.float32)

    def _affine(self, scale: float) -> tuple[np.ndarray | None, dict[float | None, np.ndarray]]:
        """``-mean / std`` and the per-full-scale gains for ``scale``, worked out once."""
        cache = self._affine_cache
        if scale not in cache:
            bias = None if self.mean is None else (-self.mean / self._std()).astype(np.float32)
            cache[scale] = (bias, {})
        return cache[scale]

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


__all__ = ["PROVIDER_ALIASES", "ModelSession", "SessionSpec", "Threading", "choose_providers",
           "to_probs"]
