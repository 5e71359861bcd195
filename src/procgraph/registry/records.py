"""A model version's record and the "model changed" event, as stored and published.

Layout and event format: see the package docstring (procgraph.registry).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from procgraph.registry.check import ModelSignature


@dataclass(frozen=True)
class ModelRecord:
    """One version of a model in the registry (without its bytes)."""

    name: str
    version: str
    sha256: str
    size: int
    pushed: float  # seconds since the epoch
    current: bool = False
    #: inputs and outputs, as onnxruntime saw them at push (None: pushed before this was kept)
    signature: ModelSignature | None = field(default=None, compare=False)

    def to_json(self) -> str:
        """The stored JSON form (``current`` is not stored: it lives in its own field)."""
        data = asdict(self)
        data.pop("current")
        data["signature"] = self.signature.to_data() if self.signature is not None else None
        return json.dumps(data, separators=(",", ":"))


@dataclass(frozen=True)
class ModelChanged:
    """The typed "model changed" event: the current version of ``name`` is now ``version``."""

    event: Literal["push", "rollback"]
    name: str
    version: str
    sha256: str

    def to_json(self) -> str:
        """The published JSON form."""
        return json.dumps(asdict(self))

    @classmethod
    def parse(cls, raw: bytes | str) -> ModelChanged:
        """Parse a published event strictly; ValueError says what is wrong with it."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        fields = ("event", "name", "version", "sha256")
        if set(data) != set(fields):
            raise ValueError(f"fields {sorted(data)}, expected {sorted(fields)}")
        if not all(isinstance(data[f], str) and data[f] for f in fields):
            raise ValueError("every field must be a non-empty string")
        if data["event"] not in ("push", "rollback"):
            raise ValueError(f"unknown event {data['event']!r}")
        return cls(event=data["event"], name=data["name"], version=data["version"],
                   sha256=data["sha256"])


def parse_record(name: str, meta: bytes | str, current: bool) -> ModelRecord:
    data = json.loads(meta)
    signature: ModelSignature | None = None
    if data.get("signature") is not None:
        try:
            signature = ModelSignature.from_data(data["signature"])
        except ValueError:
            signature = None  # a damaged signature only loses the check against it
    return ModelRecord(
        name=name, version=str(data["version"]), sha256=str(data["sha256"]),
        size=int(data["size"]), pushed=float(data["pushed"]), current=current,
        signature=signature,
    )


def event_json(kind: Literal["push", "rollback"], rec: ModelRecord) -> str:
    return ModelChanged(event=kind, name=rec.name, version=rec.version,
                        sha256=rec.sha256).to_json()


__all__ = ["ModelChanged", "ModelRecord"]
