"""Following ``registry:NAME``: versions loaded off the handler thread, swapped between batches.

The rules, in one place: the current version is loaded at setup (a model never pushed is a
clear error); then ``ModelRegistry.follow`` calls back on its own thread for each new current
version (push or rollback); the callback builds and warms up a **new** session there and
leaves it prepared; the handler takes the prepared session before its next batch, so a batch
never mixes two models. A version that fails to load is logged and skipped (the follower
never offers it again); the agent keeps the model it has. At setup, a current version that
fails to load (garbage pushed before pushes were checked, say) is logged as an error and the
agent serves the newest older version that loads instead (``problem`` says so), rather than
failing its start over and over; only if no version loads does setup fail.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from procgraph.agents.messages import ModelInfo

from procgraph.registry import ModelFollower, ModelRecord, ModelRegistry
from procgraph.safetext import printable

REGISTRY_PREFIX = "registry:"

S = TypeVar("S")


def info_of(rec: ModelRecord) -> ModelInfo:
    """The provenance a verdict carries for a registry version."""
    return ModelInfo(name=rec.name, version=rec.version, sha256=rec.sha256)


class RegistryModel(Generic[S]):
    """The model ``registry:NAME`` of one agent: first load, then the follower and the swap."""

    def __init__(self, registry: ModelRegistry, name: str, load: Callable[[bytes, ModelInfo], S],
                 log: logging.Logger, poll_s: float) -> None:
        self.registry = registry
        self.name = name
        self.log = log
        self.poll_s = poll_s
        self._load = load
        self._lock = threading.Lock()
        self._next: S | None = None
        self._follower: ModelFollower | None = None
        self.current: ModelRecord | None = None
        #: why the served version is not the registry's current one (None: it is)
        self.problem: str | None = None

    def _try(self, rec: ModelRecord) -> tuple[S | None, str]:
        """Fetch and load one version: (model, "") or (None, why it failed)."""
        try:
            return self._load(self.registry.fetch(rec.name, rec.version), info_of(rec)), ""
        except Exception as exc:  # a damaged or foreign version: never the agent's end
            return None, printable(exc)

    def start(self) -> S:
        """Load the current version now (else the newest older one that loads), then follow
        the registry; returns the first model."""
        rec = self.registry.current(self.name)
        if rec is None:
            raise RuntimeError(
                f"model {self.name!r} is not in the registry of this agent's broker: "
                f"push it with  procgraph model push {self.name} FILE"
            )
        first, why = self._try(rec)
        served = rec
        if first is None:
            versions = self.registry.versions(self.name)
            older = versions[:versions.index(rec.version)] if rec.version in versions else []
            for version in reversed(older):
                candidate = self.registry.record(self.name, version)
                first, _ = self._try(candidate)
                if first is not None:
                    served = candidate
                    break
            if first is None:
                raise RuntimeError(
                    f"model {self.name} v{rec.version} (current) cannot be loaded: {why}; "
                    f"no older version loads either: push a good model with  procgraph "
                    f"model push {self.name} FILE")
            self.problem = (f"current version v{rec.version} cannot be loaded ({why}); "
                            f"serving v{served.version}")
            self.log.error(
                "model %s v%s (current) cannot be loaded: %s; serving v%s, the newest older "
                "version that loads. Fix: procgraph model rollback %s --to %s, or push a "
                "good version", self.name, rec.version, why, served.version, self.name,
                served.version)
        self.current = served
        # known_version: the registry's current one, so a broken current is not retried
        # until another version becomes current
        self._follower = self.registry.follow(self.name, self._on_change, poll_s=self.poll_s,
                                              known_version=rec.version)
        return first

    def _on_change(self, rec: ModelRecord, data: bytes) -> None:
        """On the follower's thread: prepare a session for the new version."""
        try:
            loaded = self._load(data, info_of(rec))
        except Exception as exc:
            kept = self.current.version if self.current else "?"
            self.problem = (f"version v{rec.version} cannot be loaded ({printable(exc)}); "
                            f"serving v{kept}")
            self.log.error("cannot load model %s v%s: %s; keeping v%s", rec.name, rec.version,
                           printable(exc), kept)
            raise
        with self._lock:
            self._next = loaded
            self.current = rec
            self.problem = None

    def take(self) -> S | None:
        """The session prepared since the last call, if any (the handler swaps to it)."""
        if self._next is None:
            return None
        with self._lock:
            new, self._next = self._next, None
        return new

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop following the registry."""
        if self._follower is not None:
            self._follower.stop()
            self._follower.join(timeout_s)
            self._follower = None


__all__ = ["REGISTRY_PREFIX", "RegistryModel", "info_of"]
