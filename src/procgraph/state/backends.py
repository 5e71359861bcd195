"""Where flushed agent state lives: the agent's broker, or this process's memory (tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from procgraph.state.buffer import DELETED, Layer
from procgraph.transport.link import Link

if TYPE_CHECKING:
    import redis


class StateBackend(Protocol):
    """Where flushed state lives: a broker, or memory (for tests)."""

    def hget(self, key: str, fld: str) -> str | None:
        """One field of a hash."""

    def hmget(self, key: str, fields: list[str]) -> list[str | None]:
        """Several fields of a hash, in order."""

    def hgetall(self, key: str) -> dict[str, str]:
        """A whole hash."""

    def zscore(self, key: str, member: str) -> float | None:
        """The time of a keyset member, None if absent."""

    def apply(self, layer: Layer, before: Callable[[Any], None] | None = None) -> list[Any]:
        """Write a layer's changes, all at once (prunes first, then the writes); ``before``
        adds commands of its own to the same transaction, ahead of them."""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class RedisStateBackend:
    """State kept in the agent's broker; one MULTI/EXEC round trip per flush.

    Reads and flushes go on a :class:`~procgraph.transport.link.Link` of their own (one a
    handler call at most, so redis-py's per-command client layer is not paid for each)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.link = Link(client)

    def hget(self, key: str, fld: str) -> str | None:
        """One field of a hash."""
        raw = self.link.execute([("HGET", key, fld)], small=True)[0]
        return None if raw is None else _text(raw)

    def hmget(self, key: str, fields: list[str]) -> list[str | None]:
        """Several fields of a hash, in order."""
        if not fields:
            return []
        raws = self.link.execute([("HMGET", key, *fields)], small=True)[0]
        return [None if r is None else _text(r) for r in raws]

    def hgetall(self, key: str) -> dict[str, str]:
        """A whole hash (read with HSCAN, so a big map does not block the broker)."""
        return {_text(k): _text(v) for k, v in self.client.hscan_iter(key, count=500)}

    def zscore(self, key: str, member: str) -> float | None:
        """The time of a keyset member, None if absent."""
        score = self.link.execute([("ZSCORE", key, member)], small=True)[0]
        return None if score is None else float(score)

    def apply(self, layer: Layer, before: Callable[[Any], None] | None = None) -> list[Any]:
        """Write a layer's changes in one MULTI/EXEC transaction (``before``'s commands
        first, added with ``execute_command`` as on a redis-py pipeline); returns the
        replies of the commands in it."""
        queued = _Commands()
        if before is not None:
            before(queued)
        commands = queued.commands
        for key, cutoff in layer.prunes.items():
            commands.append(("ZREMRANGEBYSCORE", key, "-inf", f"({cutoff!r}"))
        for key, fields in layer.hashes.items():
            sets = [x for f, v in fields.items() if v is not DELETED for x in (f, v)]
            dels = [f for f, v in fields.items() if v is DELETED]
            if sets:
                commands.append(("HSET", key, *sets))
            if dels:
                commands.append(("HDEL", key, *dels))
        for key, members in layer.zsets.items():
            adds = [x for m, sc in members.items() if sc is not DELETED
                    for x in (repr(float(sc)), m)]  # type: ignore[arg-type]
            rems = [m for m, sc in members.items() if sc is DELETED]
            if adds:
                commands.append(("ZADD", key, *adds))
            if rems:
                commands.append(("ZREM", key, *rems))
        if not commands:
            return []
        results = self.link.execute([("MULTI",), *commands, ("EXEC",)],
                                    small=before is None)[-1]  # held sends carry arrays
        for result in results:
            if isinstance(result, Exception):  # a command the broker refused in EXEC
                raise result
        return list(results)

    def close(self) -> None:
        """Close the state's connection."""
        self.link.close()


class _Commands:
    """Commands added the way a redis-py pipeline takes them (``execute_command``)."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> None:
        """Add one command."""
        self.commands.append(args)


class MemoryStateBackend:
    """State kept in this process (procgraph.testing); same behaviour as the broker's."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.zsets: dict[str, dict[str, float]] = {}
        self.flushes = 0
        self._lock = threading.Lock()

    def hget(self, key: str, fld: str) -> str | None:
        """One field of a hash."""
        with self._lock:
            return self.hashes.get(key, {}).get(fld)

    def hmget(self, key: str, fields: list[str]) -> list[str | None]:
        """Several fields of a hash, in order."""
        with self._lock:
            h = self.hashes.get(key, {})
            return [h.get(f) for f in fields]

    def hgetall(self, key: str) -> dict[str, str]:
        """A whole hash."""
        with self._lock:
            return dict(self.hashes.get(key, {}))

    def zscore(self, key: str, member: str) -> float | None:
        """The time of a keyset member, None if absent."""
        with self._lock:
            return self.zsets.get(key, {}).get(member)

    def apply(self, layer: Layer, before: Callable[[Any], None] | None = None) -> list[Any]:
        """Write a layer's changes at once (``before`` is for a broker: not taken here)."""
        if before is not None:
            raise TypeError("state kept in memory cannot write other commands with it")
        with self._lock:
            self.flushes += 1
            for key, cutoff in layer.prunes.items():
                z = self.zsets.get(key, {})
                for member in [m for m, s in z.items() if s < cutoff]:
                    del z[member]
            for key, fields in layer.hashes.items():
                h = self.hashes.setdefault(key, {})
                for f, v in fields.items():
                    if v is DELETED:
                        h.pop(f, None)
                    else:
                        h[f] = v
            for key, members in layer.zsets.items():
                z = self.zsets.setdefault(key, {})
                for m, s in members.items():
                    if s is DELETED:
                        z.pop(m, None)
                    else:
                        z[m] = s
        return []


