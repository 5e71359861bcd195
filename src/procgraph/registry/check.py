"""Is this an ONNX model? Checks of model files and bytes before anyone relies on them.

Three levels, cheapest first:

- :func:`check_model_file`: the path is a regular file (not a device such as ``/dev/zero``,
  a fifo or a folder), of a sane size (at most :data:`MAX_MODEL_BYTES`, or the cap given),
  and its top-level protobuf fields are those of an ONNX ``ModelProto`` (an ``ir_version``
  and a ``graph``, every field inside the file): ``/etc/passwd`` fails here. It seeks over
  the fields, never reads the whole file: ``procgraph validate`` runs it on every model path.
- :func:`check_onnx_bytes`: the same structure check on bytes (plus a full parse when the
  ``onnx`` package is installed).
- :func:`inspect_model`: onnxruntime loads the bytes (the real test) and says the model's
  :class:`ModelSignature` (its inputs and outputs). ``ModelRegistry.push`` runs it before a
  version is stored.

Every failure is a :class:`procgraph.errors.ModelRegistryError` whose message names the file
and what to do.
"""

from __future__ import annotations

import io
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from procgraph.errors import ModelRegistryError
from procgraph.safetext import printable

#: the largest model accepted from a file: protobuf's limit for one message (2 GiB); an
#: ONNX file with external data is not supported
MAX_MODEL_BYTES = 2 * 1024**3
_MAX_FIELDS = 100_000  # a ModelProto has a handful of top-level fields; stop a hostile walk
_GRAPH_FIELD = 7
_IR_VERSION_FIELD = 1
_MAX_IR_VERSION = 1000  # ONNX is at 11 in 2025; a larger value is not an ir_version


def size_text(n: int) -> str:
    """A byte count for people: ``512 B``, ``4.0 KiB``, ``1.5 MiB``, ``2.0 GiB``."""
    if n < 1024:
        return f"{n} B"
    for unit, div in (("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3)):
        if n < div * 1024 or unit == "GiB":
            return f"{n / div:.1f} {unit}"
    raise AssertionError("unreachable")


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a fifo"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _varint(f: IO[bytes]) -> int | None:
    """One protobuf varint from ``f``; None at a clean end of file; ValueError if cut."""
    value = shift = 0
    for i in range(10):
        b = f.read(1)
        if not b:
            if i == 0:
                return None
            raise ValueError("the file ends inside a field")
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
    raise ValueError("a varint longer than 10 bytes")


def _walk(f: IO[bytes], size: int) -> None:
    """Check the top-level protobuf fields of a ModelProto in ``f`` (``size`` bytes)."""
    seen_ir = seen_graph = False
    for _ in range(_MAX_FIELDS):
        tag = _varint(f)
        if tag is None:
            break
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise ValueError(f"field number 0 at byte {f.tell() - 1}")
        if wire == 0:
            value = _varint(f)
            if value is None:
                raise ValueError("the file ends inside a field")
            if field == _IR_VERSION_FIELD:
                if not 1 <= value <= _MAX_IR_VERSION:
                    raise ValueError(f"ir_version {value} is not an ONNX IR version")
                seen_ir = True
        elif wire in (1, 5):
            skip = 8 if wire == 1 else 4
            if f.tell() + skip > size:
                raise ValueError("the file ends inside a field")
            f.seek(skip, io.SEEK_CUR)
        elif wire == 2:
            length = _varint(f)
            if length is None or f.tell() + length > size:
                raise ValueError(f"field {field} runs past the end of the file")
            seen_graph = seen_graph or (field == _GRAPH_FIELD and length > 0)
            f.seek(length, io.SEEK_CUR)
        else:
            raise ValueError(f"wire type {wire} (field {field}) is not used by ONNX")
    else:
        raise ValueError(f"more than {_MAX_FIELDS} top-level fields")
    if f.tell() != size:
        raise ValueError("trailing bytes after the last field")
    if not seen_ir:
        raise ValueError("no ir_version field")
    if not seen_graph:
        raise ValueError("no graph")


def _not_onnx(what: str, why: str) -> ModelRegistryError:
    return ModelRegistryError(
        f"{what} is not an ONNX model ({why}): give an .onnx file exported with "
        "torch.onnx.export, tf2onnx or skl2onnx"
    )


def check_model_file(path: str | Path, max_bytes: int = MAX_MODEL_BYTES) -> int:
    """Check that ``path`` is a regular ONNX file of at most ``max_bytes``; return its size.

    Follows symlinks; never reads more than the protobuf field headers.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ModelRegistryError(f"cannot read model {p}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelRegistryError(
            f"model {p} is {_kind(st.st_mode)}, not a regular file: give the path of an "
            ".onnx file"
        )
    if st.st_size == 0:
        raise ModelRegistryError(f"model {p} is empty: expected an ONNX file")
    if st.st_size > max_bytes:
        raise ModelRegistryError(
            f"model {p} is {size_text(st.st_size)}, over the limit of {size_text(max_bytes)}: "
            "is it the right file?"
        )
    try:
        with p.open("rb") as f:
            _walk(f, st.st_size)
    except OSError as exc:
        raise ModelRegistryError(f"cannot read model {p}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise _not_onnx(f"model {p}", str(exc)) from None
    return st.st_size


def read_model_file(path: str | Path, max_bytes: int = MAX_MODEL_BYTES) -> bytes:
    """The bytes of a model file, after :func:`check_model_file` (read at most max_bytes)."""
    p = Path(path)
    size = check_model_file(p, max_bytes)
    try:
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ModelRegistryError(f"cannot read model {p}: {exc.strerror or exc}") from None
    if len(data) != size:
        raise ModelRegistryError(f"model {p} changed while it was read: try again")
    return data


def check_onnx_bytes(data: bytes, what: str = "model") -> None:
    """Raise ModelRegistryError unless ``data`` is laid out like an ONNX ModelProto.

    The top-level protobuf fields must be whole, with an ``ir_version`` and a ``graph``.
    With the ``onnx`` package installed, the bytes must also parse as a ModelProto whose
    graph has outputs. The real test is :func:`inspect_model` (onnxruntime loads it).
    """
    if not data:
        raise ModelRegistryError(f"{what} is empty: expected an ONNX file")
    try:
        _walk(io.BytesIO(data), len(data))
    except ValueError as exc:
        raise _not_onnx(what, str(exc)) from None
    try:
        import onnx
    except ImportError:
        return
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:
        raise _not_onnx(what, printable(exc)) from None
    if proto.ir_version <= 0 or not proto.graph.output:
        raise _not_onnx(what, "no ir_version or no graph outputs")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: name, shape (None: any size) and onnxruntime type."""

    name: str
    shape: tuple[int | None, ...]
    type: str

    def text(self) -> str:
        """``'image' [?, 1, 16, 16] tensor(float)``."""
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name!r} [{dims}] {self.type}"


@dataclass(frozen=True)
class ModelSignature:
    """What a model takes and gives: its inputs and outputs, in order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_data(self) -> dict[str, Any]:
        """The JSON-able form stored with a version's record."""
        def one(t: TensorSpec) -> dict[str, Any]:
            return {"name": t.name, "shape": list(t.shape), "type": t.type}
        return {"inputs": [one(t) for t in self.inputs],
                "outputs": [one(t) for t in self.outputs]}

    @classmethod
    def from_data(cls, data: Any) -> ModelSignature:
        """Parse :meth:`to_data`'s form; ValueError if it is not that."""
        def one(t: Any) -> TensorSpec:
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) \
                    or not isinstance(t.get("type"), str) or not isinstance(t.get("shape"), list):
                raise ValueError(f"not a tensor spec: {printable(t)}")
            dims = tuple(d if isinstance(d, int) and not isinstance(d, bool) else None
                         for d in t["shape"])
            return TensorSpec(t["name"], dims, t["type"])
        if not isinstance(data, dict):
            raise ValueError("a signature is an object with inputs and outputs")
        return cls(tuple(one(t) for t in data.get("inputs", [])),
                   tuple(one(t) for t in data.get("outputs", [])))

    def differences(self, other: ModelSignature) -> list[str]:
        """How ``self`` differs from ``other`` (one sentence each; empty: the same)."""
        out: list[str] = []
        for kind, mine, theirs in (("input", self.inputs, other.inputs),
                                   ("output", self.outputs, other.outputs)):
            if len(mine) != len(theirs):
                out.append(f"{len(mine)} {kind}(s), not {len(theirs)}")
            for a, b in zip(mine, theirs, strict=False):
                if a != b:
                    out.append(f"{kind} {a.text()}, not {b.text()}")
        return out


def _dims(shape: Any) -> tuple[int | None, ...]:
    if not isinstance(shape, list | tuple):
        return ()
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def inspect_model(data: bytes, what: str = "model") -> ModelSignature:
    """Load ``data`` with onnxruntime (CPU) and return its signature; ModelRegistryError
    if onnxruntime cannot load it."""
    check_onnx_bytes(data, what)
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelRegistryError(
            f"cannot check {what}: onnxruntime is not installed (pip install onnxruntime)"
        ) from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # errors come back as the exception below, not on stderr
    opts.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(data, sess_options=opts,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelRegistryError(
            f"{what} cannot be loaded by onnxruntime: {printable(exc)}; check the export "
            "(opset, operators) with  python -c \"import onnx; onnx.checker.check_model("
            "'FILE')\""
        ) from None
    return ModelSignature(
        inputs=tuple(TensorSpec(i.name, _dims(i.shape), str(i.type))
                     for i in session.get_inputs()),
        outputs=tuple(TensorSpec(o.name, _dims(o.shape), str(o.type))
                      for o in session.get_outputs()),
    )


__all__ = [
    "MAX_MODEL_BYTES",
    "ModelSignature",
    "TensorSpec",
    "check_model_file",
    "check_onnx_bytes",
    "inspect_model",
    "read_model_file",
    "size_text",
]
