"""The registry itself: records, the "model changed" event, and ModelRegistry's calls.

Layout and event format: see the package docstring (procgraph.registry).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import redis

from procgraph.constants import (
    model_blob_key,
    model_channel,
    model_index_key,
    model_key,
    model_versions_key,
)
from procgraph.errors import (
    BrokerUnavailable,
    ModelIntegrityError,
    ModelRegistryError,
    broker_unavailable_as,
)

if TYPE_CHECKING:
    from procgraph.registry.follow import ModelFollower

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CURRENT = "current"
_META = "meta:"


@dataclass(frozen=True)
class ModelRecord:
    """One version of a model in the registry (without its bytes)."""

    name: str
    version: str
    sha256: str
    size: int
    pushed: float  # seconds since the epoch
    current: bool = False

    def to_json(self) -> str:
        """The stored JSON form (``current`` is not stored: it lives in its own field)."""
        data = asdict(self)
        data.pop("current")
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


def check_onnx_bytes(data: bytes, what: str = "model") -> None:
    """Raise ModelRegistryError unless ``data`` looks like an ONNX model.

    With the ``onnx`` package installed the bytes must parse as a ModelProto with a graph
    that has outputs; without it, the bytes must at least start like one (an ONNX file
    begins with its ``ir_version`` field, protobuf tag 0x08).
    """
    if not data:
        raise ModelRegistryError(f"{what} is empty: expected an ONNX file")
    try:
        import onnx
    except ImportError:
        if data[:1] != b"\x08":
            raise ModelRegistryError(
                f"{what} is not an ONNX model (it does not start with an ir_version field)"
            ) from None
        return
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:
        raise ModelRegistryError(f"{what} is not an ONNX model: {exc}") from None
    if proto.ir_version <= 0 or not proto.graph.output:
        raise ModelRegistryError(
            f"{what} is not an ONNX model: no ir_version or no graph outputs "
            "(export it with torch.onnx.export, tf2onnx or skl2onnx)"
        )


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ModelRegistryError(
            f"{what} {value!r} is not valid: use letters, digits, '.', '_' and '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ModelRegistry:
    """Models in one broker: push, list, fetch, rollback, follow; see the module docstring."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @classmethod
    def connect(cls, url: str, timeout_s: float = 2.0) -> ModelRegistry:
        """A registry on the broker at ``url``, checked with a PING (BrokerUnavailable)."""
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s,
                                          socket_timeout=30)
        except ValueError as exc:
            raise BrokerUnavailable(f"bad broker URL {url!r}: {exc}") from None
        with broker_unavailable_as(f"model registry at {url}"):
            client.ping()
        return cls(client)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    # -- writes ---------------------------------------------------------------------------
    def push(
        self, name: str, path_or_bytes: str | Path | bytes, version: str | None = None
    ) -> ModelRecord:
        """Store a new version of ``name``, make it current and publish the event.

        ``version`` defaults to the next integer after the highest integer version so far
        ("1", "2", ...). Pushing a version that exists already is an error.
        """
        _check_name(name, "model name")
        if isinstance(path_or_bytes, bytes):
            data, what = path_or_bytes, f"model {name!r}"
        else:
            path = Path(path_or_bytes)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ModelRegistryError(f"cannot read {path}: {exc.strerror or exc}") from None
            what = str(path)
        check_onnx_bytes(data, what)
        if version is not None:
            _check_name(version, "version")
        digest = hashlib.sha256(data).hexdigest()
        key, versions_key = model_key(name), model_versions_key(name)
        record: ModelRecord | None = None

        def txn(pipe: redis.client.Pipeline) -> None:
            nonlocal record
            existing = [_text(v) for v in pipe.lrange(versions_key, 0, -1)]
            chosen = version if version is not None else _next_version(existing)
            if chosen in existing:
                raise ModelRegistryError(
                    f"model {name!r} already has version {chosen!r}; pick another --version"
                )
            record = ModelRecord(name, chosen, digest, len(data), time.time(), current=True)
            pipe.multi()
            pipe.set(model_blob_key(name, chosen), data)
            pipe.hset(key, mapping={_META + chosen: record.to_json(), _CURRENT: chosen})
            pipe.rpush(versions_key, chosen)
            pipe.sadd(model_index_key(), name)
            pipe.publish(model_channel(name), _event("push", record))

        with broker_unavailable_as(f"push model {name!r}"):
            self.client.transaction(txn, key, versions_key)
        assert record is not None
        return record

    def rollback(self, name: str) -> ModelRecord:
        """Make the version before the current one current again; publish the event."""
        key, versions_key = model_key(name), model_versions_key(name)
        record: ModelRecord | None = None

        def txn(pipe: redis.client.Pipeline) -> None:
            nonlocal record
            versions = [_text(v) for v in pipe.lrange(versions_key, 0, -1)]
            if not versions:
                raise ModelRegistryError(f"no model {name!r} in the registry")
            raw = pipe.hget(key, _CURRENT)
            current = _text(raw) if raw is not None else versions[-1]
            index = versions.index(current) if current in versions else len(versions) - 1
            if index == 0:
                raise ModelRegistryError(
                    f"model {name!r} is at its first version {current!r}: "
                    "there is nothing to roll back to"
                )
            previous = versions[index - 1]
            meta = pipe.hget(key, _META + previous)
            if meta is None:
                raise ModelRegistryError(f"model {name!r}: version {previous!r} has no record")
            record = _record(name, meta, current=True)
            pipe.multi()
            pipe.hset(key, _CURRENT, previous)
            pipe.publish(model_channel(name), _event("rollback", record))

        with broker_unavailable_as(f"roll back model {name!r}"):
            self.client.transaction(txn, key, versions_key)
        assert record is not None
        return record

    # -- reads ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every model name in the registry, sorted."""
        with broker_unavailable_as("list models"):
            return sorted(_text(n) for n in self.client.smembers(model_index_key()))

    def versions(self, name: str) -> list[str]:
        """The versions of ``name``, oldest first (empty if it was never pushed)."""
        with broker_unavailable_as(f"versions of model {name!r}"):
            return [_text(v) for v in self.client.lrange(model_versions_key(name), 0, -1)]

    def list(self, name: str | None = None) -> list[ModelRecord]:
        """Every version of ``name`` (or of every model), oldest first per model."""
        out: list[ModelRecord] = []
        for model in [name] if name is not None else self.names():
            with broker_unavailable_as(f"list model {model!r}"):
                fields: dict[Any, Any] = self.client.hgetall(model_key(model))
            current = fields.get(_CURRENT.encode())
            current_text = _text(current) if current is not None else None
            for v in self.versions(model):
                meta = fields.get((_META + v).encode())
                if meta is not None:
                    out.append(_record(model, meta, current=v == current_text))
        return out

    def record(self, name: str, version: str) -> ModelRecord:
        """The record of one version; ModelRegistryError if there is none."""
        with broker_unavailable_as(f"read model {name!r}"):
            current, meta = self.client.hmget(model_key(name), [_CURRENT, _META + version])
        if meta is None:
            raise ModelRegistryError(f"model {name!r} has no version {version!r}")
        return _record(name, meta, current=current is not None and _text(current) == version)

    def current(self, name: str) -> ModelRecord | None:
        """The current version of ``name``, or None if the model was never pushed."""
        with broker_unavailable_as(f"read model {name!r}"):
            raw = self.client.hget(model_key(name), _CURRENT)
        if raw is None:
            return None
        return self.record(name, _text(raw))

    def fetch(self, name: str, version: str) -> bytes:
        """The bytes of one version, checked against their sha256."""
        rec = self.record(name, version)
        with broker_unavailable_as(f"fetch model {name!r} version {version!r}"):
            data = cast("bytes | None", self.client.get(model_blob_key(name, version)))
        if data is None:
            raise ModelRegistryError(f"model {name!r} version {version!r}: bytes are missing")
        digest = hashlib.sha256(data).hexdigest()
        if digest != rec.sha256:
            raise ModelIntegrityError(
                f"model {name!r} version {version!r}: sha256 of the stored bytes is "
                f"{digest[:12]}..., the record says {rec.sha256[:12]}...; push it again"
            )
        return bytes(data)

    # -- following ------------------------------------------------------------------------
    def follow(
        self,
        name: str,
        on_change: Callable[[ModelRecord, bytes], object],
        *,
        poll_s: float = 2.0,
        known_version: str | None = None,
    ) -> ModelFollower:
        """Call ``on_change(record, data)`` for each new current version of ``name``.

        Returns a started daemon thread (see :class:`ModelFollower`). It checks the current
        version at once, then whenever the registry publishes a change or every ``poll_s``.
        ``known_version`` is the version the caller already has: it is not delivered again
        unless another version became current in between (a rollback to it, say).
        """
        from procgraph.registry.follow import ModelFollower

        if poll_s <= 0:
            raise ValueError("poll_s must be > 0")
        follower = ModelFollower(self, name, on_change, poll_s=poll_s,
                                 known_version=known_version)
        follower.start()
        return follower


def _next_version(existing: list[str]) -> str:
    numbers = [int(v) for v in existing if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def _record(name: str, meta: bytes | str, current: bool) -> ModelRecord:
    data = json.loads(meta)
    return ModelRecord(
        name=name, version=str(data["version"]), sha256=str(data["sha256"]),
        size=int(data["size"]), pushed=float(data["pushed"]), current=current,
    )


def _event(kind: Literal["push", "rollback"], rec: ModelRecord) -> str:
    return ModelChanged(event=kind, name=rec.name, version=rec.version,
                        sha256=rec.sha256).to_json()


__all__ = [
    "ModelChanged",
    "ModelRecord",
    "ModelRegistry",
    "check_onnx_bytes",
]
