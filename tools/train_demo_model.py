"""Train the demo part classifiers and export them to ONNX.

One small CNN per view ("front", "back") learns "ok" vs "defective" from synthetic images drawn
by ``procgraph.agents.camera.synthetic``. Each model is exported to ``models/parts-<view>.onnx``
and evaluated on a held-out set (parts from other seeds, with dust and lighting) with
onnxruntime, not torch; the numbers go to ``models/parts-model-card.json``.

Model interface (see docs/models/parts.md):

- input ``image``: float32, shape (batch, 1, 128, 128); a grey view resized with
  ``cv2.INTER_AREA`` to 128x128, scaled to [0, 1], then normalised as (x - 0.5) / 0.5;
- output ``probs``: float32, shape (batch, 2), softmax over the labels ["ok", "defective"].

How it learns quickly (a plain CNN with only the image label sat at chance level for several
epochs: a small defect is a needle in a large, varied picture):

- twin views: every training part is rendered twice with the same pose, dust, lighting and
  noise, once with a defect and once without (the renderer draws them from separate random
  streams), and both go into the same batch with the same flips. The pair differs only where
  the defect is, so the gradient points at the defect and not at the nuisances;
- an auxiliary defect map: the pixels where the two renders differ give a 16x16 map of where
  the defect is; a 1x1 conv head on the stride-8 features learns that map (binary cross
  entropy) next to the image label. Its maximum also feeds the classifier. Only the image
  label is exported; the map is training-time supervision.

torch is a tool-time dependency only: ``pip install torch==2.13.0 onnx``.

Usage::

    python tools/train_demo_model.py --views front   # ~7 minutes on 2 CPU cores
    python tools/train_demo_model.py --views back    # ~7 minutes
    python tools/train_demo_model.py                 # both views, one after the other
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
from procgraph.agents.camera.synthetic import DEFECT_KINDS, VIEWS, PartSpec, make_part, render_view
from torch import nn
from torch.nn import functional as F

LABELS = ["ok", "defective"]
INPUT_NAME = "image"
OUTPUT_NAME = "probs"
INPUT_SIZE = 128
RENDER_SIZE = (256, 256)
OPSET = 17
MAP_GRID = 16  # cells per side of the auxiliary defect map (stride 8 at 128x128)
MAP_THRESHOLD = 12  # grey levels: a render pixel that the defect changes by more is marked
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


def render_twins(
    parts: Sequence[PartSpec], view: str, seed: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Render each part's view twice: without a defect and with one (dust and lighting on).

    The defect is the part's own on ``view`` or, if it has none there, a kind drawn from a
    generator seeded with ``seed``. Returns the images, uint8 (N, 2, 1, H, W) with [:, 0] ok
    and [:, 1] defective; the defect maps, uint8 (N, MAP_GRID, MAP_GRID), 1 where the defect
    changed a render pixel by more than MAP_THRESHOLD; and the kinds.
    """
    rng = np.random.default_rng([seed, VIEWS.index(view)])
    h, w = RENDER_SIZE
    x = np.empty((len(parts), 2, 1, INPUT_SIZE, INPUT_SIZE), np.uint8)
    maps = np.empty((len(parts), MAP_GRID, MAP_GRID), np.uint8)
    kinds: list[str] = []
    for i, spec in enumerate(parts):
        kind = spec.defect(view) or DEFECT_KINDS[int(rng.integers(0, len(DEFECT_KINDS)))]
        kinds.append(kind)
        ok = render_view(PartSpec(spec.part_id, None, None, spec.seed), view, RENDER_SIZE)
        bad = render_view(PartSpec(spec.part_id, kind, kind, spec.seed), view, RENDER_SIZE)
        x[i, 0, 0], x[i, 1, 0] = shrink(ok), shrink(bad)
        changed = cv2.absdiff(ok, bad) > MAP_THRESHOLD
        cells = changed.reshape(MAP_GRID, h // MAP_GRID, MAP_GRID, w // MAP_GRID)
        maps[i] = cells.max(axis=(1, 3))
    return x, maps, kinds


def _block(chans: int, out: int, stride: int) -> list[nn.Module]:
    """3x3 conv (no bias), batch norm, ReLU."""
    return [
        nn.Conv2d(chans, out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU(inplace=True),
    ]


class PartNet(nn.Module):
    """Seven 3x3 conv blocks (batch norm, ReLU), four of them with stride 2; a defect-map head;
    global max and mean pooling; one linear layer.

    128x128 -> 64x64 (``width`` channels, two blocks: the first halves the input with learned
    filters, so a 1-px scratch survives it, unlike a plain resize) -> 32x32 (2x width, two
    blocks) -> 16x16 (4x width, two blocks) -> 8x8 (8x width, one block). A 1x1 conv on the
    16x16 features gives a defect-map logit per cell (trained against the twin-render map);
    the classifier sees the global max and mean of the 8x8 features and the map's maximum.
    """

    def __init__(self, width: int = 16) -> None:
        """Build the layers; ``width`` is the channel count of the first blocks."""
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(1, w, 2),
            *_block(w, w, 1),
            *_block(w, 2 * w, 2),
            *_block(2 * w, 2 * w, 1),
            *_block(2 * w, 4 * w, 2),
            *_block(4 * w, 4 * w, 1),
        )
        self.defect_map = nn.Conv2d(4 * w, 1, 1)
        nn.init.constant_(self.defect_map.bias, -4.0)  # defects cover few cells: start low
        self.last = nn.Sequential(*_block(4 * w, 8 * w, 2))
        self.head = nn.Linear(2 * 8 * w + 1, len(LABELS))

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits, shape (batch, 2), and defect-map logits, shape (batch, 16, 16)."""
        f = self.features(x)
        dmap = self.defect_map(f)
        g = self.last(f)
        pooled = [torch.amax(g, dim=(2, 3)), g.mean(dim=(2, 3)), torch.amax(dmap, dim=(2, 3))]
        return self.head(torch.cat(pooled, dim=1)), dmap[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch, 2)."""
        return self.forward_with_map(x)[0]


class WithSoftmax(nn.Module):
    """Export wrapper: the ONNX model returns probabilities, not logits."""

    def __init__(self, net: nn.Module) -> None:
        """Wrap ``net``."""
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax over the labels, shape (batch, 2)."""
        return F.softmax(self.net(image), dim=1)


def augment(
    xb: torch.Tensor, mb: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and transposes (the 8 symmetries of the square), images and maps alike.

    Consecutive images (twins) get the same transform. The renderer rotates the part, the
    light and the lighting gradient freely and jitters the position symmetrically, so a
    mirrored or quarter-turned view is as plausible as the original.
    """
    pairs = (len(xb) + 1) // 2
    ops = [(torch.rand(pairs, generator=gen) < 0.5).repeat_interleave(2)[: len(xb)] for _ in "hvt"]
    flip_h, flip_v, trans = ops
    xb = torch.where(flip_h[:, None, None, None], xb.flip(3), xb)
    mb = torch.where(flip_h[:, None, None], mb.flip(2), mb)
    xb = torch.where(flip_v[:, None, None, None], xb.flip(2), xb)
    mb = torch.where(flip_v[:, None, None], mb.flip(1), mb)
    xb = torch.where(trans[:, None, None, None], xb.transpose(2, 3), xb)
    mb = torch.where(trans[:, None, None], mb.transpose(1, 2), mb)
    return xb, mb


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
    twins: np.ndarray,
    maps: np.ndarray,
    xv: np.ndarray,
    yv: np.ndarray,
    args: argparse.Namespace,
) -> nn.Module:
    """Train one model on twin renders, printing losses and validation accuracy per epoch.

    ``twins`` is (N, 2, 1, H, W) uint8 (ok, defective), ``maps`` the defect maps of the
    defective twins; (xv, yv) is an ordinary validation set (parts as the line makes them).
    """
    torch.manual_seed(args.seed)
    net = PartNet(args.width).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    pairs_per_batch = max(1, args.batch // 2)
    steps_per_epoch = (len(twins) + pairs_per_batch - 1) // pairs_per_batch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=args.lr,
        total_steps=args.epochs * steps_per_epoch,
        pct_start=0.15,
        div_factor=10.0,
    )
    flat = twins.reshape(-1, *twins.shape[2:])  # ok_0, bad_0, ok_1, bad_1, ...
    map_t = torch.from_numpy(np.stack([np.zeros_like(maps), maps], 1)).float().flatten(0, 1)
    labels = torch.tensor([0, 1]).repeat(len(twins))
    pos_weight = torch.tensor(args.map_pos_weight)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(len(twins), generator=gen)
        total = total_map = 0.0
        right = seen = 0
        for start in range(0, len(order), pairs_per_batch):
            pair = order[start : start + pairs_per_batch]
            idx = torch.stack([2 * pair, 2 * pair + 1], 1).flatten()  # twins side by side
            xb, mb = augment(to_input(flat[idx.numpy()]), map_t[idx], gen)
            yb = labels[idx]
            logits, dmap = net.forward_with_map(xb.contiguous(memory_format=torch.channels_last))
            loss_cls = F.cross_entropy(logits, yb)
            loss_map = F.binary_cross_entropy_with_logits(dmap, mb, pos_weight=pos_weight)
            loss = loss_cls + args.map_weight * loss_map
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss_cls.detach()) * len(xb)
            total_map += float(loss_map.detach()) * len(xb)
            right += int((logits.detach().argmax(1) == yb).sum())
            seen += len(xb)
        val_acc = accuracy(net, xv, yv)
        print(
            f"[{view}] epoch {epoch:2d}/{args.epochs}  loss {total / seen:.4f}  "
            f"map loss {total_map / seen:.4f}  train acc {right / seen:.4f}  "
            f"val acc {val_acc:.4f}  ({time.perf_counter() - t0:.0f} s)",
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
    # the exported graph must compute what the torch model computes
    probe = torch.from_numpy(
        np.random.default_rng(0).uniform(-1, 1, (3, 1, INPUT_SIZE, INPUT_SIZE))
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: probe.float().numpy()})[0]
    with torch.no_grad():
        want = model(probe.float()).numpy()
    if not np.allclose(got, want, atol=1e-4):
        raise SystemExit(f"{path}: onnxruntime and torch disagree ({np.abs(got - want).max()})")


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
    ap.add_argument(
        "--train-parts",
        type=int,
        default=16000,
        help="training parts per view; each is rendered twice (ok and defective twin)",
    )
    ap.add_argument("--val-parts", type=int, default=1000, help="validation parts (per epoch)")
    ap.add_argument("--eval-parts", type=int, default=2000, help="held-out parts for the card")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64, help="images per batch (half as many twins)")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--width", type=int, default=16, help="channels of the first conv blocks")
    ap.add_argument("--map-weight", type=float, default=1.0, help="weight of the defect-map loss")
    ap.add_argument("--map-pos-weight", type=float, default=5.0, help="BCE weight of map cells")
    ap.add_argument(
        "--defect-rate",
        type=float,
        default=0.75,
        help="validation and held-out parts: ~50%% defective per view",
    )
    ap.add_argument("--seed", type=int, default=7, help="training seed")
    ap.add_argument("--eval-seed", type=int, default=20_240_917, help="held-out parts seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "models")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Train, export and evaluate the models; write the model card JSON."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # CPU kernels with a fixed thread count give repeatable runs; torch's deterministic mode
    # (use_deterministic_algorithms) made training ~4x slower here, so it is not used
    np.random.seed(args.seed)
    t_start = time.perf_counter()
    seeds = {"train": args.seed, "val": args.seed + 1, "eval": args.eval_seed}
    train_parts = make_parts(args.train_parts, seeds["train"], args.defect_rate)
    val_parts = make_parts(args.val_parts, seeds["val"], args.defect_rate)
    eval_parts = make_parts(args.eval_parts, seeds["eval"], args.defect_rate)
    eval_seeds = {p.seed for p in eval_parts}
    for name, other in (("training", train_parts), ("validation", val_parts)):
        overlap = {p.seed for p in other} & eval_seeds
        if overlap:
            raise SystemExit(f"held-out set shares {len(overlap)} part seeds with the {name} set")
    command = "python tools/train_demo_model.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )

    card_path = args.out_dir / "parts-model-card.json"
    card: dict[str, object] = (
        json.loads(card_path.read_text()) if card_path.exists() else {"models": {}}
    )
    models: dict[str, object] = card.setdefault("models", {})  # type: ignore[assignment]
    for view in args.views:
        t0 = time.perf_counter()
        twins, maps, _ = render_twins(train_parts, view, seeds["train"])
        xv, yv = render_set(val_parts, view)
        print(
            f"[{view}] rendered {len(twins)} training twins (ok + defective) and {len(xv)} "
            f"validation views ({int(yv.sum())} defective) in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        t0 = time.perf_counter()
        net = train_view(view, twins, maps, xv, yv, args)
        train_s = time.perf_counter() - t0
        del twins, maps
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
            "training": {
                "command": command,
                "train_parts": args.train_parts,
                "train_images": 2 * args.train_parts,
                "epochs": args.epochs,
                "batch": args.batch,
                "lr": args.lr,
                "weight_decay": args.weight_decay,
                "width": args.width,
                "map_weight": args.map_weight,
                "map_pos_weight": args.map_pos_weight,
                "seeds": seeds,
                "train_seconds": round(train_s),
                "torch": torch.__version__,
                "onnxruntime": ort.__version__,
                "python": platform.python_version(),
            },
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
                "tool": "tools/train_demo_model.py",
                "data": (
                    "parts.make_part(i, default_rng(seed), defect_rate) rendered at "
                    f"{RENDER_SIZE[0]}x{RENDER_SIZE[1]} with dust and lighting, each part twice "
                    "(without and with a defect: its own, else a random kind), plus a "
                    f"{MAP_GRID}x{MAP_GRID} map of where the twins differ (auxiliary target)"
                ),
                "render_size": list(RENDER_SIZE),
                "per_view": "see models.<view>.training",
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
