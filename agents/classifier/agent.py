"""OnnxClassifier: any single-input image-classification ONNX model as an agent.

Frames in, one Verdict per frame out. The model comes from a file (relative to the graph
folder) or from the model registry on the agent's broker (``model: registry:NAME``); in
the latter case the agent follows the registry and swaps to a new current version between
two batches (follow.py). Loading, pre-processing and inference live in session.py. See
docs/agents/classifier.md.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self

import cv2
import numpy as np
from procgraph.agents.classifier.follow import REGISTRY_PREFIX, RegistryModel
from procgraph.agents.classifier.session import (
    ModelSession,
    SessionSpec,
    Threading,
    choose_providers,
    to_probs,
)
from procgraph.agents.messages import Frame, ModelInfo, Verdict
from pydantic import Field, ValidationInfo, field_validator, model_validator

from procgraph import Agent, AgentContext, Input, Output
from procgraph.registry import ModelRegistryError, check_model_file, read_model_file
from procgraph.safetext import printable


class Prepared(NamedTuple):
    """A frame with its input tensor, made by ``prepare_frames`` for one model session."""

    frame: Frame
    model: ModelSession
    tensor: np.ndarray


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
        intra_op_threads: int | None = Field(
            None, ge=0, description="onnxruntime intra-op threads (None: derived from the "
            "CPUs and the replicas on the node; 0: onnxruntime's default)")
        inter_op_threads: int | None = Field(
            None, ge=0, description="inter-op threads, used with execution_mode parallel "
            "(None: derived; 0: onnxruntime's default)")
        allow_spinning: bool | None = Field(
            None, description="let onnxruntime's idle pool threads spin (None: derived)")
        execution_mode: Literal["sequential", "parallel"] = "sequential"
        poll_s: float = Field(0.5, gt=0, description="registry check period (registry:NAME)")

        @field_validator("model")
        @classmethod
        def _model(cls, v: str, info: ValidationInfo) -> str:
            """A model file must be a regular ONNX file of sane size (registry: is not a file).

            Absolute paths are checked always; relative ones when the graph's folder is in
            the validation context (``{"graph_dir": ...}``), else at setup. A path that does
            not exist is left to setup, so a graph can be validated or deployed on a machine
            without its models; one that exists must be a model.
            """
            if v.startswith(REGISTRY_PREFIX):
                if not v[len(REGISTRY_PREFIX):]:
                    raise ValueError("registry: needs a model name, e.g. registry:parts-front")
                return v
            path = Path(v).expanduser()
            context: Any = info.context
            if not path.is_absolute():
                graph_dir = context.get("graph_dir") if isinstance(context, dict) else None
                if graph_dir is None:
                    return v
                path = Path(graph_dir) / path
            if not os.path.lexists(path):
                return v
            try:
                check_model_file(path)
            except ModelRegistryError as exc:
                raise ValueError(str(exc)) from None
            return v

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
            missing = [p for p in self.positives if p not in self.labels]
            if missing or not self.positives:
                raise ValueError(f"positive_label {missing or self.positives} is not in labels "
                                 f"{self.labels}")
            for what, values in (("mean", self.mean), ("std", self.std)):
                if values is not None and len(values) not in (1, 3):
                    raise ValueError(f"{what} has one value or one per channel (3)")
            if self.std is not None and any(s == 0 for s in self.std):
                raise ValueError("std values must not be 0")
            return self

        @property
        def positives(self) -> list[str]:
            """``positive_label`` as a list."""
            p = self.positive_label
            return [p] if isinstance(p, str) else list(p)

        def threading(self, context: AgentContext) -> Threading:
            """onnxruntime's threading for a replica running in ``context`` (see Threading)."""
            return Threading.choose(
                intra=self.intra_op_threads, inter=self.inter_op_threads,
                spinning=self.allow_spinning, parallel=self.execution_mode == "parallel",
                cpus=context.cpus, replicas_on_node=context.replicas_on_node,
                class_replicas_on_node=context.class_replicas_on_node)

        def session_spec(self, threading: Threading | None = None) -> SessionSpec:
            """The params that decide how the model is fed (and how onnxruntime threads)."""
            return SessionSpec(
                input_name=self.input_name, output_name=self.output_name, layout=self.layout,
                color=self.color, size=(self.size[0], self.size[1]) if self.size else None,
                dtype=self.dtype, mean=tuple(self.mean) if self.mean is not None else None,
                std=tuple(self.std) if self.std is not None else None,
                threading=threading)

    params: Params
    frames = Input(Frame, batch=8, max_wait_ms=5, doc="images to classify")
    verdicts = Output(Verdict, doc="one verdict per frame, with the model that made it")

    # -- lifecycle ------------------------------------------------------------------------
    def setup(self) -> None:
        """Load the model (file or registry) and, for the registry, start following it."""
        p = self.params
        self._providers = choose_providers(p.providers, self.log)
        threads = p.threading(self.context)
        if p.intra_op_threads is None and self.context.replicas_on_node > 1:
            cv2.setNumThreads(threads.intra_op_threads)  # its own process: OpenCV's pool too
        self._spec = p.session_spec(threads)
        self._positive_idx = np.array([p.labels.index(x) for x in p.positives])
        self._positive_list = [int(i) for i in self._positive_idx]
        self._others = [i for i in range(len(p.labels)) if i not in set(self._positive_list)]
        #: the threshold as float32, as numpy compares it with float32 scores
        self._threshold32 = float(np.float32(p.threshold))
        self._registry_model: RegistryModel[ModelSession] | None = None
        self.swaps = 0
        if p.model.startswith(REGISTRY_PREFIX):
            self._registry_model = RegistryModel(
                self.context.models, p.model[len(REGISTRY_PREFIX):], self._load,
                self.log, p.poll_s)
            self._model = self._registry_model.start()
        else:
            path = self.context.resolve_path(p.model)
            try:  # a regular ONNX file of sane size: never /dev/zero or /etc/passwd
                data = read_model_file(path)
            except ModelRegistryError as exc:
                raise RuntimeError(str(exc)) from None
            digest = hashlib.sha256(data).hexdigest()
            info = ModelInfo(name=p.model_name or Path(p.model).stem,
                             version=p.model_version or digest[:12], sha256=digest)
            self._model = self._load(data, info)
        m = self._model
        self.log.info(
            "model %s v%s (sha256 %s) on %s: input %r %s %s %dx%d %s, output %r; %s",
            m.info.name, m.info.version, m.info.sha256[:12], ",".join(self._providers),
            m.input_name, m.layout, m.color, m.size[0], m.size[1], np.dtype(m.dtype).name,
            m.output_name, threads.describe())

    @classmethod
    def check_model(cls, params: OnnxClassifier.Params, data: bytes) -> None:
        """Raise ValueError unless a classifier with ``params`` can run the model ``data``.

        Loads it on the CPU, works out its input from the params (size, color, layout,
        dtype, input/output names), runs it once on a blank image and checks that its output
        has one column per label. ``procgraph model push --graph G`` calls it.
        """
        info = ModelInfo(name="pushed", version="check", sha256=hashlib.sha256(data).hexdigest())
        try:
            session = ModelSession.load(data, info, params.session_spec(),
                                        ["CPUExecutionProvider"])
            to_probs(session.warm_up(), 1, params.labels, params.softmax)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"onnxruntime cannot run it: {printable(exc)}") from None

    def teardown(self) -> None:
        """Stop following the registry."""
        registry_model = getattr(self, "_registry_model", None)
        if registry_model is not None:
            registry_model.stop()

    # -- handler --------------------------------------------------------------------------
    def prepare_frames(self, frame: Frame) -> Prepared:
        """Pre-process one frame for the model served now, ahead of ``on_frames`` (under a
        backlog the runtime runs it while the previous batch is classified). A frame the
        model cannot take (e.g. ``roi`` outside it) is dead-lettered."""
        model = self._model
        return Prepared(frame, model, model.prepare(frame, self.params.roi, self.params.scale))

    def on_frames(self, items: list[Prepared]) -> None:
        """Classify a batch with one inference; emit one verdict per frame, in order."""
        if isinstance(items, Prepared):  # an edge configured with batch 1
            items = [items]
        self._maybe_swap()
        model = self._model  # one model for the whole batch, even if a swap is prepared now
        frames = [p.frame for p in items]
        if any(p.model is not model for p in items):  # prepared for the model swapped out
            x = model.preprocess(frames, self.params.roi, self.params.scale)
        elif len(items) == 1:
            x = items[0].tensor[None]
        else:
            x = np.stack([p.tensor for p in items])
        t0 = time.perf_counter()
        out = model.infer(x)
        per_frame_ms = (time.perf_counter() - t0) * 1000 / len(frames)
        labels = self.params.labels
        probs = to_probs(out, len(frames), labels, self.params.softmax)
        rows = probs.tolist()
        positives, others = self._positive_list, self._others
        if len(positives) == 1:  # the score is that column: float32 values, compared as such
            scores = [row[positives[0]] for row in rows]
            defective = [score >= self._threshold32 for score in scores]
        else:  # summed in float32, as the probabilities
            scores_np = probs[:, self._positive_idx].sum(axis=1)
            defective = (scores_np >= self.params.threshold).tolist()
            scores = scores_np.tolist()
        for i, f in enumerate(frames):
            row = rows[i]  # the best positive label when defective, else the best other one
            chosen = max(positives if defective[i] else others, key=row.__getitem__)
            self.verdicts.send(Verdict(  # the key names the frame: its trace is inherited
                key=f.key, camera=f.camera, seq=f.seq,
                capture_ns=f.capture_ns, truth=f.truth,
                label=labels[chosen], score=scores[i],
                defective=defective[i],
                scores=dict(zip(labels, rows[i], strict=True)),
                inference_ms=per_frame_ms, model=model.info,
            ))

    # -- models -----------------------------------------------------------------------------
    @property
    def model_info(self) -> ModelInfo:
        """The model that classifies the next batch (the last one loaded)."""
        return self._model.info

    @property
    def model_problem(self) -> str | None:
        """Why the model served is not the registry's current version (None: it is)."""
        rm = self._registry_model
        return rm.problem if rm is not None else None

    def _load(self, data: bytes, info: ModelInfo) -> ModelSession:
        return ModelSession.load(data, info, self._spec, self._providers)

    def _maybe_swap(self) -> None:
        """Between two batches: take the session the registry follower prepared, if any."""
        if self._registry_model is None:
            return
        new = self._registry_model.take()
        if new is None:
            return
        old = self._model.info
        self._model = new
        self.swaps += 1
        self.log.info("swapped model %s: v%s (sha256 %s) -> v%s (sha256 %s)", new.info.name,
                      old.version, old.sha256[:12], new.info.version, new.info.sha256[:12])


__all__ = ["OnnxClassifier"]
