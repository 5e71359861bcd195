"""OnnxClassifier: any single-input image-classification ONNX model as an agent.

Frames in, one Verdict per frame out. The model comes from a file (relative to the graph
folder) or from the model registry on the agent's broker (``model: registry:NAME``); in
the latter case the agent follows the registry and swaps to a new current version between
two batches. See docs/agents/classifier.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import cv2
import numpy as np
from procgraph.agents.messages import Frame, ModelInfo, Verdict
from pydantic import Field, field_validator, model_validator

from procgraph import Agent, Input, Output
from procgraph.transport import TRANSIENT

REGISTRY_PREFIX = "registry:"

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
_BAYER = {  # PFNC Bayer pattern -> OpenCV conversion to BGR
    "BayerRG": cv2.COLOR_BayerRG2BGR, "BayerGR": cv2.COLOR_BayerGR2BGR,
    "BayerBG": cv2.COLOR_BayerBG2BGR, "BayerGB": cv2.COLOR_BayerGB2BGR,
}


class OnnxClassifier(Agent):
    """Classifies frames with an ONNX model; emits one Verdict per frame.

    Pre-processing (in this order): crop ``roi``, convert to ``color``, resize to ``size``
    (cv2.INTER_AREA), bring high-bit-depth pixels to the 0..255 range, multiply by ``scale``,
    subtract ``mean`` and divide by ``std`` per channel, lay out as ``NCHW`` or ``NHWC``.
    Unset options are read from the model's input (size, channels, layout, dtype).
    """

    class Params(Agent.Params):
        """Parameters; see docs/agents/classifier.md for the full table."""

        model: str = Field(description="ONNX file (relative to the graph) or registry:NAME")
        model_name: str | None = Field(None, description="provenance name (default: file stem)")
        model_version: str | None = Field(
            None, description="provenance version (default: sha256[:12] of the file)")
        roi: list[int] | None = Field(None, description="crop [x, y, w, h] before resizing")
        size: list[int] | None = Field(None, description="model input [w, h] (default: model's)")
        color: Literal["gray", "rgb", "bgr"] | None = Field(
            None, description="channels the model expects (default: gray for 1, rgb for 3)")
        scale: float = 1 / 255
        mean: list[float] | None = None
        std: list[float] | None = None
        layout: Literal["NCHW", "NHWC"] | None = Field(
            None, description="tensor layout (default: guessed from the model's input shape)")
        dtype: Literal["float32", "float16"] | None = Field(
            None, description="input tensor type (default: the model's)")
        input_name: str | None = None
        output_name: str | None = None
        softmax: bool = Field(False, description="the model outputs logits: apply softmax")
        labels: list[str] = Field(default_factory=lambda: ["ok", "defective"])
        positive_label: str | list[str] = "defective"
        threshold: float = Field(0.5, ge=0.0, le=1.0)
        providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
        intra_op_threads: int = Field(0, ge=0, description="0: onnxruntime's default")
        poll_s: float = Field(0.5, gt=0, description="registry check period (registry:NAME)")

        @field_validator("roi")
        @classmethod
        def _roi(cls, v: list[int] | None) -> list[int] | None:
            if v is not None and (len(v) != 4 or v[0] < 0 or v[1] < 0 or v[2] < 1 or v[3] < 1):
                raise ValueError("roi is [x, y, w, h] with x, y >= 0 and w, h >= 1")
            return v

        @field_validator("size")
        @classmethod
        def _size(cls, v: list[int] | None) -> list[int] | None:
            if v is not None and (len(v) != 2 or min(v) < 1):
                raise ValueError("size is [w, h] with w, h >= 1")
            return v

        @model_validator(mode="after")
        def _labels(self) -> Self:
            if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
                raise ValueError("labels needs at least two distinct names")
            positives = (
                [self.positive_label] if isinstance(self.positive_label, str)
                else self.positive_label
            )
            missing = [p for p in positives if p not in self.labels]
            if missing or not positives:
                raise ValueError(f"positive_label {missing or positives} is not in labels "
                                 f"{self.labels}")
            for what, values in (("mean", self.mean), ("std", self.std)):
                if values is not None and len(values) not in (1, 3):
                    raise ValueError(f"{what} has one value or one per channel (3)")
            if self.std is not None and any(s == 0 for s in self.std):
                raise ValueError("std values must not be 0")
            return self

    frames = Input(Frame, batch=8, max_wait_ms=5, doc="images to classify")
    verdicts = Output(Verdict, doc="one verdict per frame, with the model that made it")

    # -- lifecycle ------------------------------------------------------------------------
    def setup(self) -> None:
        """Load the model (file or registry) and, for the registry, start following it."""
        import onnxruntime as ort

        self._ort = ort
        self._providers = self._choose_providers(self.params.providers)
        p = self.params
        positives = [p.positive_label] if isinstance(p.positive_label, str) else p.positive_label
        self._positive_idx = np.array([p.labels.index(x) for x in positives])
        self._others = [i for i in range(len(p.labels)) if i not in set(self._positive_idx)]
        self._swap_lock = threading.Lock()
        self._next: _Loaded | None = None
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.swaps = 0
        if p.model.startswith(REGISTRY_PREFIX):
            self._registry_name = p.model[len(REGISTRY_PREFIX):]
            from procgraph.models import ModelRegistry

            self._registry = ModelRegistry(self.context.redis())
            rec = self._registry.current(self._registry_name)
            if rec is None:
                raise RuntimeError(
                    f"model {self._registry_name!r} is not in the registry of this agent's "
                    f"broker: push it with  procgraph model push {self._registry_name} FILE"
                )
            data = self._registry.fetch(rec.name, rec.version)
            self._model = self._load(data, ModelInfo(name=rec.name, version=rec.version,
                                                     sha256=rec.sha256))
            self._watcher = threading.Thread(target=self._watch, name="model-watch",
                                             daemon=True)
            self._watcher.start()
        else:
            path = self.context.resolve_path(p.model)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise RuntimeError(f"cannot read model {path}: {exc.strerror or exc}") from None
            digest = hashlib.sha256(data).hexdigest()
            info = ModelInfo(name=p.model_name or Path(p.model).stem,
                             version=p.model_version or digest[:12], sha256=digest)
            self._model = self._load(data, info)
        m = self._model
        self.log.info(
            "model %s v%s (sha256 %s) on %s: input %r %s %s %dx%d %s, output %r",
            m.info.name, m.info.version, m.info.sha256[:12], ",".join(self._providers),
            m.input_name, m.layout, m.color, m.size[0], m.size[1], np.dtype(m.dtype).name,
            m.output_name)

    def teardown(self) -> None:
        """Stop following the registry."""
        watch_stop = getattr(self, "_watch_stop", None)
        if watch_stop is not None:
            watch_stop.set()
        if getattr(self, "_watcher", None) is not None:
            assert self._watcher is not None
            self._watcher.join(timeout=5)

    # -- handler --------------------------------------------------------------------------
    def on_frames(self, frames: list[Frame]) -> None:
        """Classify a batch with one inference; emit one verdict per frame, in order."""
        if isinstance(frames, Frame):  # an edge configured with batch 1
            frames = [frames]
        self._maybe_swap()
        model = self._model  # one model for the whole batch, even if a swap is prepared now
        x = model.preprocess(frames, self.params.roi, self.params.scale)
        t0 = time.perf_counter()
        probs = model.infer(x)
        per_frame_ms = (time.perf_counter() - t0) * 1000 / len(frames)
        probs = self._to_probs(probs, len(frames))
        labels = self.params.labels
        scores = probs[:, self._positive_idx].sum(axis=1)
        defective = scores >= self.params.threshold
        best_other = np.array(self._others)[probs[:, self._others].argmax(axis=1)]
        best_pos = self._positive_idx[probs[:, self._positive_idx].argmax(axis=1)]
        chosen = np.where(defective, best_pos, best_other)
        rows = probs.tolist()
        for i, f in enumerate(frames):
            self.verdicts.send(Verdict(
                key=f.key, trace=list(f.trace), camera=f.camera, seq=f.seq,
                capture_ns=f.capture_ns, truth=f.truth,
                label=labels[int(chosen[i])], score=float(scores[i]),
                defective=bool(defective[i]),
                scores=dict(zip(labels, rows[i], strict=True)),
                inference_ms=per_frame_ms, model=model.info,
            ))

    # -- model loading ----------------------------------------------------------------------
    @property
    def model_info(self) -> ModelInfo:
        """The model that classifies the next batch (the last one loaded)."""
        return self._model.info

    def _choose_providers(self, asked: list[str]) -> list[str]:
        available = self._ort.get_available_providers()
        chosen: list[str] = []
        for name in asked:
            full = PROVIDER_ALIASES.get(name.lower(), name)
            if full in available:
                if full not in chosen:
                    chosen.append(full)
            else:
                self.log.warning("execution provider %s is not available here (available: %s);"
                                 " skipping it", full, ", ".join(available))
        if not chosen:
            self.log.warning("none of the asked providers is available: using the CPU")
            chosen = ["CPUExecutionProvider"]
        return chosen

    def _load(self, data: bytes, info: ModelInfo) -> _Loaded:
        opts = self._ort.SessionOptions()
        opts.log_severity_level = 3
        if self.params.intra_op_threads:
            opts.intra_op_num_threads = self.params.intra_op_threads
        session = self._ort.InferenceSession(data, sess_options=opts,
                                             providers=self._providers)
        loaded = _Loaded.from_session(session, info, self.params)
        loaded.warm_up()
        return loaded

    def _to_probs(self, out: np.ndarray, n: int) -> np.ndarray:
        out = np.asarray(out, dtype=np.float32).reshape(n, -1)
        k = len(self.params.labels)
        if out.shape[1] == 1 and k == 2:  # one column: the probability (or logit) of labels[1]
            p1 = 1 / (1 + np.exp(-out[:, 0])) if self.params.softmax else out[:, 0]
            return np.stack([1 - p1, p1], axis=1)
        if out.shape[1] != k:
            raise ValueError(f"the model outputs {out.shape[1]} values per frame but labels "
                             f"has {k} names ({self.params.labels}): fix labels")
        if self.params.softmax:
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        return out

    # -- following the registry -------------------------------------------------------------
    def _maybe_swap(self) -> None:
        if self._next is None:
            return
        with self._swap_lock:
            new, self._next = self._next, None
        if new is None:
            return
        old = self._model.info
        self._model = new
        self.swaps += 1
        self.log.info("swapped model %s: v%s (sha256 %s) -> v%s (sha256 %s)", new.info.name,
                      old.version, old.sha256[:12], new.info.version, new.info.sha256[:12])

    def _watch(self) -> None:
        """Background thread: prepare a session for each new current version.

        It wakes on the registry's event or every ``poll_s``; the handler swaps the prepared
        session in before its next batch, so a batch never mixes two models.
        """
        name = self._registry_name
        from procgraph.constants import model_channel

        pubsub = None
        failed: str | None = None  # a version that did not load: not retried
        target = self._model.info.version
        while not self._watch_stop.is_set():
            candidate: str | None = None
            try:
                if pubsub is None:
                    pubsub = self._registry.client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(model_channel(name))
                msg = pubsub.get_message(timeout=self.params.poll_s)
                if msg is not None:
                    event = json.loads(msg["data"])
                    self.log.info("registry event: %s %s v%s", event.get("event"), name,
                                  event.get("version"))
                rec = self._registry.current(name)
                if rec is None or rec.version in (target, failed):
                    continue
                candidate = rec.version
                data = self._registry.fetch(rec.name, rec.version)
                loaded = self._load(data, ModelInfo(name=rec.name, version=rec.version,
                                                    sha256=rec.sha256))
                with self._swap_lock:
                    self._next = loaded
                target, failed = rec.version, None
            except TRANSIENT as exc:
                self.log.warning("model registry unreachable (%s); retrying", exc)
                _close_quietly(pubsub)
                pubsub = None
                self._watch_stop.wait(self.params.poll_s)
            except Exception as exc:
                if candidate is None:
                    raise
                failed = candidate
                self.log.error("cannot load model %s v%s: %s; keeping v%s", name, candidate,
                               exc, target)
        _close_quietly(pubsub)


def _close_quietly(pubsub: Any) -> None:
    """Close a pub/sub connection, ignoring errors of a broker that is gone."""
    if pubsub is not None:
        with contextlib.suppress(Exception):
            pubsub.close()


@dataclass
class _Loaded:
    """A ready onnxruntime session and how to feed it."""

    session: Any
    info: ModelInfo
    input_name: str
    output_name: str
    layout: str  # NCHW | NHWC | NHW (gray without a channel axis)
    color: str
    size: tuple[int, int]  # w, h
    dtype: type
    fixed_batch: int | None
    mean: np.ndarray | None
    std: np.ndarray | None

    @classmethod
    def from_session(cls, session: Any, info: ModelInfo, p: OnnxClassifier.Params) -> _Loaded:
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

        if len(shape) == 4:
            layout = p.layout or ("NHWC" if dim(3) in (1, 3) and dim(1) not in (1, 3) else "NCHW")
            channels = dim(1) if layout == "NCHW" else dim(3)
            hw = (dim(2), dim(3)) if layout == "NCHW" else (dim(1), dim(2))
        elif len(shape) == 3:
            layout, channels, hw = "NHW", 1, (dim(1), dim(2))
        else:
            raise ValueError(f"model input {inp.name!r} has shape {inp.shape}: expected an "
                             "image batch [N, C, H, W], [N, H, W, C] or [N, H, W]")
        color = p.color or ("gray" if channels in (1, None) else "rgb")
        want = 1 if color == "gray" else 3
        if channels is not None and channels != want:
            raise ValueError(f"color {color!r} gives {want} channel(s) but the model input "
                             f"{inp.name!r} {inp.shape} ({layout}) takes {channels}")
        if p.size is not None:
            size = (p.size[0], p.size[1])
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

        def per_channel(v: list[float] | None) -> np.ndarray | None:
            if v is None:
                return None
            if len(v) not in (1, want):
                raise ValueError(f"mean/std {v} needs 1 or {want} value(s) for {color}")
            return np.asarray(v, dtype=np.float32)

        return cls(session=session, info=info, input_name=inp.name,
                   output_name=p.output_name or outputs[0], layout=layout, color=color,
                   size=size, dtype=dtype, fixed_batch=dim(0), mean=per_channel(p.mean),
                   std=per_channel(p.std))

    # -- pre-processing ---------------------------------------------------------------------
    def _one(self, f: Frame, roi: list[int] | None) -> np.ndarray:
        img = f.image
        if roi is not None:
            x, y, w, h = roi
            if y + h > img.shape[0] or x + w > img.shape[1]:
                raise ValueError(f"roi {roi} lies outside frame {f.key!r} of shape {img.shape}")
            img = img[y:y + h, x:x + w]
        img = _convert_color(img, f.pixel_format, self.color)
        w, h = self.size
        if img.shape[1] != w or img.shape[0] != h:
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        if img.dtype != np.uint8:  # high bit depth: to the 0..255 range, so scale is uniform
            img = img.astype(np.float32) * np.float32(255.0 / _max_value(img, f.pixel_format))
        if img.ndim == 2:
            img = img[:, :, None]
        return img

    def preprocess(self, frames: list[Frame], roi: list[int] | None, scale: float) -> np.ndarray:
        """Frames -> one input tensor for the whole batch."""
        imgs = [self._one(f, roi) for f in frames]
        if any(i.dtype != np.uint8 for i in imgs):
            imgs = [i.astype(np.float32, copy=False) for i in imgs]
        x = np.stack(imgs).astype(np.float32, copy=False)  # N, H, W, C
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
        return np.concatenate(outs)

    def warm_up(self) -> None:
        """Run once on a blank image: checks the spec end to end and allocates buffers."""
        w, h = self.size
        c = 1 if self.color == "gray" else 3
        shape = {"NCHW": (1, c, h, w), "NHWC": (1, h, w, c), "NHW": (1, h, w)}[self.layout]
        x = np.zeros(shape, dtype=self.dtype)
        try:
            self.infer(x)
        except Exception as exc:
            raise ValueError(f"model {self.info.name} v{self.info.version} rejects an input "
                             f"of shape {list(shape)} {np.dtype(self.dtype).name}: {exc}; check "
                             "size, color, layout and dtype") from None


def _max_value(img: np.ndarray, pixel_format: str) -> float:
    """The full-scale value of an integer image, from the bit depth in its PFNC name."""
    if img.dtype.kind == "f":
        return 255.0
    digits = "".join(ch for ch in pixel_format if ch.isdigit())
    bits = int(digits) if digits else 8 * img.dtype.itemsize
    bits = min(bits, 8 * img.dtype.itemsize)
    return float(2**bits - 1)


def _convert_color(img: np.ndarray, pixel_format: str, color: str) -> np.ndarray:
    """Convert one image (mono, Bayer, BGR/RGB, BGRA/RGBA) to gray, rgb or bgr."""
    fmt = pixel_format.lower()
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        code = _BAYER.get(pixel_format[:7]) if pixel_format.startswith("Bayer") else None
        if code is not None:
            img = cv2.cvtColor(img, code)  # -> BGR, handled below
            fmt = "bgr8"
        elif color == "gray":
            return img
        else:
            return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)  # gray: RGB and BGR are the same
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"unsupported image shape {img.shape} ({pixel_format})")
    rgb_order = fmt.startswith("rgb")  # PFNC RGB8/RGBa8; anything else 3-channel is BGR
    if img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2RGB if rgb_order else cv2.COLOR_BGRA2BGR)
    if color == "gray":
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if rgb_order else cv2.COLOR_BGR2GRAY)
    if (color == "rgb") != rgb_order:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # swaps R and B either way
    return img


__all__ = ["OnnxClassifier"]
