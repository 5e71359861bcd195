"""The registry itself: ModelRegistry's calls (push, rollback, reads, follow).

Layout and event format: see the package docstring (procgraph.registry).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

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
from procgraph.redact import redact_url
from procgraph.registry.check import (
    MAX_MODEL_BYTES,
    ModelSignature,
    inspect_model,
    read_model_file,
    size_text,
)
from procgraph.registry.records import ModelChanged, ModelRecord, event_json, parse_record
from procgraph.safetext import printable
from procgraph.transport.limits import max_bulk_bytes

if TYPE_CHECKING:
    from procgraph.registry.follow import ModelFollower

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CURRENT = "current"
_META = "meta:"
#: bytes sent per command while a model is uploaded (progress is reported per chunk)
CHUNK_BYTES = 4 * 1024 * 1024
_UPLOAD_TTL_S = 3600  # an interrupted push leaves its partial upload for at most this long

#: ``progress(sent_bytes, total_bytes)``, called after each chunk of a push
Progress = Callable[[int, int], object]
#: ``check(data)`` raises (ValueError, ModelRegistryError) when a model does not suit a user
ModelCheck = Callable[[bytes], object]


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
            raise BrokerUnavailable(f"bad broker URL {redact_url(url)!r}: {exc}") from None
        with broker_unavailable_as(f"model registry at {url}"):
            client.ping()
        return cls(client)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    # -- writes ---------------------------------------------------------------------------
    def push(
        self,
        name: str,
        path_or_bytes: str | Path | bytes,
        version: str | None = None,
        *,
        check: ModelCheck | None = None,
        new_signature: bool = False,
        progress: Progress | None = None,
    ) -> ModelRecord:
        """Check a model, store it as a new version of ``name``, make it current, publish.

        Before anything is stored: the size is checked against the broker's limit for one
        value (``proto-max-bulk-len``, see :meth:`max_model_bytes`), onnxruntime must load
        the bytes (:func:`procgraph.registry.check.inspect_model`), ``check(data)`` (e.g. an
        agent's ``check_model``) must not raise, and the inputs and outputs must be those of
        the current version unless ``new_signature``. The bytes then go up in chunks of
        :data:`CHUNK_BYTES` (``progress(sent, total)`` after each) into a temporary key that
        the transaction renames: a failed push stores nothing and is never resent.

        ``version`` defaults to the next integer after the highest integer version so far
        ("1", "2", ...). Pushing a version that exists already is an error.
        """
        _check_name(name, "model name")
        if version is not None:
            _check_name(version, "version")
        limit = self.max_model_bytes()
        if isinstance(path_or_bytes, bytes):
            data, what = path_or_bytes, f"model {name!r}"
            if len(data) > limit:
                raise self._too_large(what, len(data), limit)
        else:
            path = Path(path_or_bytes)
            what = str(path)
            try:
                st = path.stat()
            except OSError as exc:
                raise ModelRegistryError(f"cannot read {path}: {exc.strerror or exc}") from None
            if stat.S_ISREG(st.st_mode) and st.st_size > limit:
                raise self._too_large(what, st.st_size, limit)
            data = read_model_file(path, limit)
        signature = inspect_model(data, what)
        if check is not None:
            try:
                check(data)
            except (ValueError, ModelRegistryError) as exc:
                raise ModelRegistryError(f"{what} does not suit its agent: {exc}") from None
        current = self.current(name)
        if current is not None and current.signature is not None and not new_signature:
            diff = signature.differences(current.signature)
            if diff:
                raise ModelRegistryError(
                    f"{what} does not take and give what version {current.version!r} of "
                    f"{name!r} does: {'; '.join(diff)}. Agents following {name!r} would "
                    "refuse it: push it under another name, or pass --new-signature once "
                    "their params match it"
                )
        if version is not None and version in self.versions(name):
            raise ModelRegistryError(
                f"model {name!r} already has version {version!r}; pick another --version")
        digest = hashlib.sha256(data).hexdigest()
        upload = _upload_key(name)
        try:
            self._upload(upload, data, progress)
            return self._commit(name, version, upload, digest, len(data), signature)
        finally:  # renamed away on success; on failure dropped now (or it expires)
            with contextlib.suppress(redis.RedisError):
                self.client.delete(upload)

    def max_model_bytes(self) -> int:
        """The largest model this broker takes: its ``proto-max-bulk-len`` (one value)."""
        with broker_unavailable_as("read the broker's limits"):
            return min(max_bulk_bytes(self.client), MAX_MODEL_BYTES)

    def _too_large(self, what: str, size: int, limit: int) -> ModelRegistryError:
        return ModelRegistryError(
            f"{what} is {size_text(size)}, over the {size_text(limit)} this broker takes in "
            "one value (its proto-max-bulk-len): raise it (proto-max-bulk-len in the "
            "broker's config, e.g. 2gb) or push a smaller model"
        )

    def _upload(self, key: str, data: bytes, progress: Progress | None) -> None:
        """Send ``data`` into ``key`` chunk by chunk (SET, then APPENDs), with an expiry."""
        view = memoryview(data)
        total = len(data)
        with broker_unavailable_as(f"upload to {key}"):
            for start in range(0, total, CHUNK_BYTES):
                chunk = view[start:start + CHUNK_BYTES]
                pipe = self.client.pipeline(transaction=False)
                if start == 0:
                    pipe.set(key, bytes(chunk), ex=_UPLOAD_TTL_S)
                else:
                    pipe.append(key, bytes(chunk))
                    pipe.expire(key, _UPLOAD_TTL_S)
                try:
                    pipe.execute()
                except redis.ResponseError as exc:
                    raise ModelRegistryError(
                        f"the broker refused the upload after {size_text(start)} of "
                        f"{size_text(total)}: {printable(exc)}"
                    ) from None
                if progress is not None:
                    progress(min(start + CHUNK_BYTES, total), total)

    def _commit(self, name: str, version: str | None, upload: str, digest: str, size: int,
                signature: ModelSignature) -> ModelRecord:
        """The transaction that turns an upload into the current version."""
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
            if pipe.strlen(upload) != size:
                raise ModelRegistryError(
                    f"the upload of model {name!r} is incomplete (it expired or was changed): "
                    "push it again")
            record = ModelRecord(name, chosen, digest, size, time.time(), current=True,
                                 signature=signature)
            pipe.multi()
            pipe.rename(upload, model_blob_key(name, chosen))
            pipe.persist(model_blob_key(name, chosen))
            pipe.hset(key, mapping={_META + chosen: record.to_json(), _CURRENT: chosen})
            pipe.rpush(versions_key, chosen)
            pipe.sadd(model_index_key(), name)
            pipe.publish(model_channel(name), event_json("push", record))

        with broker_unavailable_as(f"push model {name!r}"):
            self.client.transaction(txn, key, versions_key, upload)
        assert record is not None
        return record

    def rollback(self, name: str, to: str | None = None) -> ModelRecord:
        """Make version ``to`` (default: the one before the current one) current again.

        Publishes the event; agents following ``name`` swap to it.
        """
        key, versions_key = model_key(name), model_versions_key(name)
        record: ModelRecord | None = None

        def txn(pipe: redis.client.Pipeline) -> None:
            nonlocal record
            versions = [_text(v) for v in pipe.lrange(versions_key, 0, -1)]
            if not versions:
                raise ModelRegistryError(f"no model {name!r} in the registry")
            raw = pipe.hget(key, _CURRENT)
            current = _text(raw) if raw is not None else versions[-1]
            if to is not None:
                if to not in versions:
                    raise ModelRegistryError(
                        f"model {name!r} has no version {to!r}; versions: "
                        f"{', '.join(versions[-20:])}")
                if to == current:
                    raise ModelRegistryError(f"version {to!r} of {name!r} is current already")
                target = to
            else:
                index = versions.index(current) if current in versions else len(versions) - 1
                if index == 0:
                    raise ModelRegistryError(
                        f"model {name!r} is at its first version {current!r}: "
                        "there is nothing to roll back to"
                    )
                target = versions[index - 1]
            meta = pipe.hget(key, _META + target)
            if meta is None:
                raise ModelRegistryError(f"model {name!r}: version {target!r} has no record")
            if not pipe.exists(model_blob_key(name, target)):
                raise ModelRegistryError(
                    f"model {name!r} version {target!r}: its bytes are missing; "
                    "roll back to another version")
            record = parse_record(name, meta, current=True)
            pipe.multi()
            pipe.hset(key, _CURRENT, target)
            pipe.publish(model_channel(name), event_json("rollback", record))

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
                    out.append(parse_record(model, meta, current=v == current_text))
        return out

    def record(self, name: str, version: str) -> ModelRecord:
        """The record of one version; ModelRegistryError if there is none."""
        with broker_unavailable_as(f"read model {name!r}"):
            current, meta = self.client.hmget(model_key(name), [_CURRENT, _META + version])
        if meta is None:
            raise ModelRegistryError(f"model {name!r} has no version {version!r}")
        return parse_record(name, meta, current=current is not None and _text(current) == version)

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


def _upload_key(name: str) -> str:
    """A fresh temporary key for the bytes of one push (renamed to the blob at commit)."""
    return f"{model_key(name)}:upload:{secrets.token_hex(8)}"


__all__ = [
    "CHUNK_BYTES",
    "ModelChanged",
    "ModelCheck",
    "ModelRecord",
    "ModelRegistry",
    "Progress",
]
