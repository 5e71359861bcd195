"""Train the demo part classifiers and export them to ONNX.

One small CNN per view ("front", "back") learns "ok" vs "defective" from synthetic images drawn
by ``procgraph.agents.camera.parts``. Each model is exported to ``models/parts-<view>.onnx``
and evaluated on a held-out set (parts from other seeds, with dust and lighting) with
onnxruntime, not torch; the numbers go to ``models/parts-model-card.json``.

Model interface (see docs/models/parts.md):

- input ``image``: float32, shape (batch, 1, 128, 128); a grey view resized with
  ``cv2.INTER_AREA`` to 128x128, scaled to [0, 1], then normalised as (x - 0.5) / 0.5;
- output ``probs``: float32, shape (batch, 2), softmax over the labels ["ok", "defective"].

torch is a tool-time dependency only: ``pip install torch==2.13.0 onnxscript``.

Usage::

    python tools/train_demo_model.py            # defaults, ~8-9 minutes on 2 CPU cores
    python tools/train_demo_model.py --help
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import torch
from procgraph.agents.camera.parts import DEFECT_KINDS, PartSpec, make_part, render_view
from torch import nn
from torch.nn import functional as F

LABELS = ["ok", "defective"]
INPUT_NAME = "image"
OUTPUT_NAME = "probs"
INPUT_SIZE = 128
RENDER_SIZE = (256, 256)
OPSET = 17
ROOT = Path(__file__).resolve().parents[1]


def shrink(view: np.ndarray) -> np.ndarray:
    """A rendered view (grey or BGR uint8) as the grey uint8 INPUT_SIZE x INPUT_SIZE image."""
    if view.ndim == 3:
        view = cv2.cvtColor(view, cv2.COLOR_BGR2GRAY)
    return cv2.resize(view, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)


def normalise(small: np.ndarray) -> np.ndarray:
    """uint8 images (any shape) -> float32 model values: x / 255, then (x - 0.5) / 0.5."""
    x = small.astype(np.float32) / 255.0
    return (x - 0.5) / 0.5


def preprocess(view: np.ndarray) -> np.ndarray:
    """Turn a rendered view (grey or BGR uint8) into the model input, shape (1, H, W)."""
    return normalise(shrink(view))[None]


def make_parts(count: int, seed: int, defect_rate: float) -> list[PartSpec]:
    """``count`` parts from a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return [make_part(i, rng, defect_rate) for i in range(count)]


def render_set(parts: Sequence[PartSpec], view: str) -> tuple[np.ndarray, np.ndarray]:
    """Render one view of each part (with dust and lighting), once.

    Returns the resized grey images as uint8, shape (N, 1, H, W) (4x smaller in memory than
    float32; :func:`normalise` turns a batch into model input) and the labels, shape (N,).
    """
    x = np.empty((len(parts), 1, INPUT_SIZE, INPUT_SIZE), np.uint8)
    y = np.empty(len(parts), np.int64)
    for i, spec in enumerate(parts):
        x[i, 0] = shrink(render_view(spec, view, RENDER_SIZE))
        y[i] = int(spec.defect(view) is not None)
    return x, y


class PartNet(nn.Module):
    """Six 3x3 conv blocks (batch norm, ReLU), four of them with stride 2, then global max and
    mean pooling side by side and one linear layer.

    The stride-2 first block halves the 128x128 input at once (learned, so a 1-px scratch
    survives it, unlike a plain resize); the later blocks widen as the resolution drops.
    Max pooling finds small local defects; mean pooling keeps gradients flowing to every
    position early in training. Batch norm keeps the first epochs useful.
    """

    def __init__(self, width: int = 16) -> None:
        """Build the layers; ``width`` is the channel count of the first block."""
        super().__init__()
        plan = [(width, 2), (2 * width, 2), (2 * width, 1), (4 * width, 2), (4 * width, 1)]
        plan.append((8 * width, 2))
        blocks: list[nn.Module] = []
        chans = 1
        for out, stride in plan:
            blocks += [
                nn.Conv2d(chans, out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            chans = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(2 * chans, len(LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch, 2)."""
        f = self.features(x)
        return self.head(torch.cat([torch.amax(f, dim=(2, 3)), f.mean(dim=(2, 3))], dim=1))


class WithSoftmax(nn.Module):
    """Export wrapper: the ONNX model returns probabilities, not logits."""

    def __init__(self, net: nn.Module) -> None:
        """Wrap ``net``."""
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax over the labels, shape (batch, 2)."""
        return F.softmax(self.net(image), dim=1)


def augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and transposes (the 8 symmetries of the square), per image.

    The renderer rotates the part, the light and the lighting gradient freely and jitters the
    position symmetrically, so a mirrored or quarter-turned view is as plausible as the original.
    """
    n = len(xb)
    flip_h, flip_v, trans = (torch.rand(n, generator=gen) < 0.5 for _ in range(3))
    xb = torch.where(flip_h[:, None, None, None], xb.flip(3), xb)
    xb = torch.where(flip_v[:, None, None, None], xb.flip(2), xb)
    return torch.where(trans[:, None, None, None], xb.transpose(2, 3), xb)


def to_input(x: np.ndarray) -> torch.Tensor:
    """uint8 images (N, 1, H, W) -> normalised float32 tensor, channels-last for speed."""
    return torch.from_numpy(normalise(x)).contiguous(memory_format=torch.channels_last)


def accuracy(net: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 250) -> float:
    """Accuracy of ``net`` (torch, eval mode) on uint8 images ``x``."""
    net.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            pred = net(to_input(x[i : i + batch])).argmax(1).numpy()
            right += int((pred == y[i : i + batch]).sum())
    return right / len(x)


def train_view(
    view: str,
    x: np.ndarray,
    y: np.ndarray,
    xv: np.ndarray,
    yv: np.ndarray,
    args: argparse.Namespace,
) -> nn.Module:
    """Train one model on (x, y), printing loss and validation accuracy per epoch."""
    torch.manual_seed(args.seed)
    net = PartNet(args.width).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * ((len(x) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=steps, pct_start=0.15, div_factor=10.0
    )
    yt = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(len(x), generator=gen)
        total, right, seen = 0.0, 0, 0
        for start in range(0, len(order), args.batch):
            idx = order[start : start + args.batch]
            xb = augment(to_input(x[idx.numpy()]), gen).contiguous(
                memory_format=torch.channels_last
            )
            yb = yt[idx]
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(xb)
            right += int((logits.detach().argmax(1) == yb).sum())
            seen += len(xb)
        val_acc = accuracy(net, xv, yv)
        print(
            f"[{view}] epoch {epoch:2d}/{args.epochs}  loss {total / seen:.4f}  "
            f"train acc {right / seen:.4f}  val acc {val_acc:.4f}  "
            f"lr {sched.get_last_lr()[0]:.2e}  ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    return net.eval()


def export_onnx(net: nn.Module, view: str, path: Path, args: argparse.Namespace) -> None:
    """Export ``net`` with a softmax head to ``path`` (opset 17, dynamic batch)."""
    model = WithSoftmax(net.to(memory_format=torch.contiguous_format)).eval()
    dummy = torch.zeros(2, 1, INPUT_SIZE, INPUT_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript exporter writes opset 17 directly; the dynamo exporter writes opset 18
    # and its down-conversion to 17 fails on ReduceMax/ReduceMean (axes as an input).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    proto.producer_name = "procgraph tools/train_demo_model.py"
    proto.doc_string = (
        f"procgraph demo part classifier, {view} view: input {INPUT_NAME} float32 "
        f"(batch,1,{INPUT_SIZE},{INPUT_SIZE}), grey, INTER_AREA resize, x/255, (x-0.5)/0.5; "
        f"output {OUTPUT_NAME} = softmax over {LABELS}."
    )
    meta = {
        "labels": json.dumps(LABELS),
        "view": view,
        "input_size": str(INPUT_SIZE),
        "normalisation": "(x/255 - 0.5) / 0.5",
        "train_seed": str(args.seed),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    opsets = {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import}
    if opsets.get("ai.onnx") != OPSET:
        raise SystemExit(f"exported {path} with opsets {opsets}, expected ai.onnx {OPSET}")
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def evaluate_onnx(path: Path, parts: Sequence[PartSpec], view: str) -> dict[str, object]:
    """Classify one view of ``parts`` with onnxruntime; return counts and metrics."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xu, y = render_set(parts, view)
    x = normalise(xu)
    probs = np.concatenate(
        [sess.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 256]})[0] for i in range(0, len(x), 256)]
    )
    pred = probs.argmax(1)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    kinds = np.array([spec.defect(view) or "none" for spec in parts])
    recall_by_kind = {
        kind: round(float((pred[kinds == kind] == 1).mean()), 4)
        for kind in DEFECT_KINDS
        if (kinds == kind).any()
    }
    return {
        "samples": len(y),
        "defective_samples": int(y.sum()),
        "ok_samples": int(len(y) - y.sum()),
        "accuracy": round((tp + tn) / len(y), 4),
        "precision_defective": round(tp / max(tp + fp, 1), 4),
        "recall_defective": round(tp / max(tp + fn, 1), 4),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "recall_by_kind": recall_by_kind,
        "false_positive_rate_ok": round(fp / max(fp + tn, 1), 4),
    }


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line options."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--views", nargs="+", default=["front", "back"], choices=["front", "back"])
    ap.add_argument("--train-parts", type=int, default=8000, help="training parts per view")
    ap.add_argument("--val-parts", type=int, default=500, help="validation parts (per epoch)")
    ap.add_argument("--eval-parts", type=int, default=2000, help="held-out parts for the card")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--width", type=int, default=16, help="channels of the first conv block")
    ap.add_argument("--defect-rate", type=float, default=0.75, help="~50%% defective per view")
    ap.add_argument("--seed", type=int, default=7, help="training seed")
    ap.add_argument("--eval-seed", type=int, default=20_240_917, help="held-out parts seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "models")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Train, export and evaluate the models; write the model card JSON."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    np.random.seed(args.seed)
    t_start = time.perf_counter()
    seeds = {"train": args.seed, "val": args.seed + 1, "eval": args.eval_seed}
    train_parts = make_parts(args.train_parts, seeds["train"], args.defect_rate)
    val_parts = make_parts(args.val_parts, seeds["val"], args.defect_rate)
    eval_parts = make_parts(args.eval_parts, seeds["eval"], args.defect_rate)
    overlap = {p.seed for p in train_parts} & {p.seed for p in eval_parts}
    if overlap:
        raise SystemExit(f"held-out set shares {len(overlap)} part seeds with the training set")

    card_path = args.out_dir / "parts-model-card.json"
    card: dict[str, object] = (
        json.loads(card_path.read_text()) if card_path.exists() else {"models": {}}
    )
    models: dict[str, object] = card.setdefault("models", {})  # type: ignore[assignment]
    for view in args.views:
        t0 = time.perf_counter()
        x, y = render_set(train_parts, view)
        xv, yv = render_set(val_parts, view)
        print(
            f"[{view}] rendered {len(x)} training ({int(y.sum())} defective) and {len(xv)} "
            f"validation views in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        net = train_view(view, x, y, xv, yv, args)
        path = args.out_dir / f"parts-{view}.onnx"
        export_onnx(net, view, path, args)
        metrics = evaluate_onnx(path, eval_parts, view)
        print(
            f"[{view}] held-out (onnxruntime, {metrics['samples']} views, "
            f"{metrics['defective_samples']} defective): accuracy {metrics['accuracy']:.4f}  "
            f"precision {metrics['precision_defective']:.4f}  "
            f"recall {metrics['recall_defective']:.4f}  by kind {metrics['recall_by_kind']}",
            flush=True,
        )
        print(f"[{view}] wrote {path} ({path.stat().st_size / 1024:.1f} KB)", flush=True)
        models[view] = {
            "file": f"models/{path.name}",
            "size_bytes": path.stat().st_size,
            "sha256": sha256(path),
            "parameters": sum(p.numel() for p in net.parameters()),
            "heldout": metrics,
        }

    card.update(
        {
            "name": "procgraph demo part classifiers",
            "labels": LABELS,
            "input": {
                "name": INPUT_NAME,
                "shape": ["batch", 1, INPUT_SIZE, INPUT_SIZE],
                "dtype": "float32",
                "preprocessing": (
                    "grey uint8 view (BGR -> cv2.COLOR_BGR2GRAY first); cv2.resize to "
                    f"{INPUT_SIZE}x{INPUT_SIZE} with cv2.INTER_AREA; x = x / 255; "
                    "x = (x - 0.5) / 0.5"
                ),
            },
            "output": {
                "name": OUTPUT_NAME,
                "shape": ["batch", 2],
                "dtype": "float32",
                "meaning": "softmax probabilities over labels; defective if probs[:, 1] > 0.5",
            },
            "opset": OPSET,
            "training": {
                "command": "python tools/train_demo_model.py "
                + " ".join(argv if argv is not None else sys.argv[1:]),
                "train_parts_per_view": args.train_parts,
                "epochs": args.epochs,
                "defect_rate": args.defect_rate,
                "seeds": seeds,
                "render_size": list(RENDER_SIZE),
                "torch": torch.__version__,
                "onnxruntime": ort.__version__,
                "python": platform.python_version(),
            },
            "heldout_set": {
                "parts": args.eval_parts,
                "seed": seeds["eval"],
                "defect_rate": args.defect_rate,
                "dust": True,
                "lighting": True,
                "evaluated_with": "onnxruntime CPUExecutionProvider",
            },
        }
    )
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {card_path}; total {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
