"""The write buffer of agent state: writes kept in layers until one flush writes them.

Reads see own writes: they look at the unflushed layers (newest first), then the backend. A
flush swaps the current layer out and writes it in one pipeline; if the broker cannot be
reached, the layer is merged back under the writes made since, so nothing is lost or reordered.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from procgraph.errors import broker_unavailable_as

if TYPE_CHECKING:
    from procgraph.state.backends import StateBackend

#: an overlay entry that removes the field or member
DELETED: Any = object()


@dataclass
class Layer:
    """Writes not yet in the backend: last value per field/member, prune cutoffs per key."""

    hashes: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> json | DELETED
    zsets: dict[str, dict[str, Any]] = field(default_factory=dict)  # member -> score | DELETED
    prunes: dict[str, float] = field(default_factory=dict)  # key -> remove scores below this

    def empty(self) -> bool:
        return not (self.hashes or self.zsets or self.prunes)

    def prune(self, key: str, cutoff: float) -> None:
        members = self.zsets.get(key, {})
        for member, score in members.items():
            if score is not DELETED and score < cutoff:
                members[member] = DELETED
        self.prunes[key] = max(cutoff, self.prunes.get(key, -math.inf))

    def merge(self, newer: Layer) -> None:
        """Put ``newer``'s writes on top of this layer's, as if made after them."""
        for key, fields in newer.hashes.items():
            self.hashes.setdefault(key, {}).update(fields)
        for key, cutoff in newer.prunes.items():
            self.prune(key, cutoff)
        for key, members in newer.zsets.items():
            self.zsets.setdefault(key, {}).update(members)



class Store:
    """The write buffer of one agent replica over a backend (shared and replica scopes)."""

    def __init__(self, backend: StateBackend) -> None:
        self.backend = backend
        self.lock = threading.RLock()
        self.flush_lock = threading.Lock()
        self.current = Layer()
        self.flushing: Layer | None = None
        #: the agent read or wrote its state in this process (a source's sends are then held
        #: for its next state change: procgraph.delivery.together)
        self.used = False
        #: called after each write (outside the lock)
        self.on_change: Callable[[], None] | None = None

    def _changed(self) -> None:
        self.used = True
        if self.on_change is not None:
            self.on_change()

    def _layers(self) -> list[Layer]:
        """Unflushed layers, newest first."""
        self.used = True
        return [self.current] if self.flushing is None else [self.current, self.flushing]

    # -- hashes ---------------------------------------------------------------------------
    def hset(self, key: str, fld: str, value: Any) -> None:
        with self.lock:
            self.current.hashes.setdefault(key, {})[fld] = value
        self._changed()

    def hget(self, key: str, fld: str) -> str | None:
        with self.lock:
            for layer in self._layers():
                got = layer.hashes.get(key, {}).get(fld)
                if got is not None:
                    return None if got is DELETED else str(got)
        with broker_unavailable_as("read agent state"):
            return self.backend.hget(key, fld)

    def hmget(self, key: str, fields: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        missing: list[str] = []
        with self.lock:
            for f in fields:
                for layer in self._layers():
                    got = layer.hashes.get(key, {}).get(f)
                    if got is not None:
                        if got is not DELETED:
                            found[f] = got
                        break
                else:
                    missing.append(f)
        if missing:
            with broker_unavailable_as("read agent state"):
                values = self.backend.hmget(key, missing)
            found.update({f: v for f, v in zip(missing, values, strict=True) if v is not None})
        return found

    def hgetall(self, key: str) -> dict[str, str]:
        with broker_unavailable_as("read agent state"):
            out = self.backend.hgetall(key)
        with self.lock:
            for layer in reversed(self._layers()):
                for f, v in layer.hashes.get(key, {}).items():
                    if v is DELETED:
                        out.pop(f, None)
                    else:
                        out[f] = v
        return out

    # -- sorted sets ----------------------------------------------------------------------
    def zadd(self, key: str, member: str, score: Any) -> None:
        with self.lock:
            self.current.zsets.setdefault(key, {})[member] = score
        self._changed()

    def zprune(self, key: str, cutoff: float) -> None:
        with self.lock:
            self.current.prune(key, cutoff)
        self._changed()

    def zcontains(self, key: str, member: str) -> bool:
        cutoff = -math.inf  # prunes made after an older layer's write remove it too
        with self.lock:
            for layer in self._layers():
                score = layer.zsets.get(key, {}).get(member)
                if score is not None:
                    return score is not DELETED and score >= cutoff
                cutoff = max(cutoff, layer.prunes.get(key, -math.inf))
        with broker_unavailable_as("read agent state"):
            stored = self.backend.zscore(key, member)
        return stored is not None and stored >= cutoff

    # -- flush ----------------------------------------------------------------------------
    def checkpoint(self) -> Layer:
        with self.lock:
            c = self.current
            return Layer({k: dict(v) for k, v in c.hashes.items()},
                          {k: dict(v) for k, v in c.zsets.items()}, dict(c.prunes))

    def rollback(self, token: object) -> None:
        if not isinstance(token, Layer):
            raise TypeError("rollback() takes what checkpoint() returned")
        with self.lock:
            self.current = token

    def pending(self) -> bool:
        with self.lock:
            return not self.current.empty()

    def flush(self, before: Callable[[Any], None] | None = None) -> list[Any]:
        """Write the unflushed changes in one transaction; ``before`` queues commands of
        its own ahead of them in that transaction (its replies come first in the list)."""
        with self.flush_lock:
            with self.lock:
                if self.current.empty() and before is None:
                    return []
                layer, self.current = self.current, Layer()
                self.flushing = layer
            try:
                with broker_unavailable_as("write agent state"):
                    replies = self.backend.apply(layer, before)
            except BaseException:
                with self.lock:  # keep every write, in order, for the next flush
                    layer.merge(self.current)
                    self.current, self.flushing = layer, None
                raise
            with self.lock:
                self.flushing = None
            return replies


