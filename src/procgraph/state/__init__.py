"""Agent state: a small durable key-value store per agent (and per replica), written with acks.

``self.state`` on a running agent is an :class:`AgentState`:

- ``get(name, default)``, ``put(name, value)``, ``delete(name)``: small JSON values;
- ``map(name)``: a :class:`StateMap`, a durable dict of str -> JSON value;
- ``keyset(name)``: a :class:`StateKeySet`, a durable set of str members, each with a time;
- ``replica``: the same API, private to this replica (the rest is shared by all replicas).

Writes are buffered and read back at once by the same agent (reads see own writes). They reach
the broker in one MULTI/EXEC pipeline when :meth:`AgentState.flush` runs: the runtime calls it
after a handler returned, **after** the handler's outputs were written and **before** its input
is acknowledged; after each ``tick()`` (after what it sent); when a source calls
``self.flush()`` or ``self.sleep()``, after the messages it sent so far; and at teardown.
So after a crash the state is never ahead of what was sent.

Keys come from :func:`procgraph.constants.state_key`: the plain values live in one hash
(``values``), each map in a hash (``map:<name>``), each keyset in a sorted set scored by the
member's time (``keys:<name>``). A value that is not JSON raises
:class:`~procgraph.errors.StateError` at ``put``; a broker that cannot be reached raises
:class:`~procgraph.errors.BrokerUnavailable`. :meth:`AgentState.in_memory` gives the same API
without a broker (``procgraph.testing`` uses it).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from procgraph.constants import state_key
from procgraph.errors import StateError
from procgraph.state.backends import MemoryStateBackend, RedisStateBackend, StateBackend
from procgraph.state.buffer import DELETED, Store

if TYPE_CHECKING:
    import redis

__all__ = ["AgentState", "MemoryStateBackend", "StateKeySet", "StateMap"]
_VALUES = "values"


def _check_json(value: Any, where: str) -> None:
    """Raise StateError unless ``value`` is made of dict/list/str/int/float/bool/None."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StateError(f"{where}: {value!r} is not a JSON number; store finite floats")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise StateError(f"{where}: key {k!r} is not a str; JSON objects have str keys")
            _check_json(item, f"{where}[{k!r}]")
        return
    raise StateError(f"{where}: a {type(value).__name__} is not a JSON value; store "
                     "dict/list/str/int/float/bool/None (e.g. msg.model_dump(mode='json'))")


def _encode(value: Any, where: str) -> str:
    _check_json(value, where)
    return json.dumps(value, separators=(",", ":"))


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise StateError(f"{what} must be a non-empty str, got {name!r}")
    return name



class StateMap:
    """A durable dict of str -> JSON value, in one hash of the agent's state."""

    def __init__(self, store: Store, key: str, name: str) -> None:
        self._store = store
        self._key = key
        self.name = name

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default``."""
        raw = self._store.hget(self._key, _check_name(key, "a map key"))
        return default if raw is None else json.loads(raw)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of those ``keys`` that are present (one round trip)."""
        wanted = [_check_name(k, "a map key") for k in keys]
        return {k: json.loads(v) for k, v in self._store.hmget(self._key, wanted).items()}

    def put(self, key: str, value: Any) -> None:
        """Set ``key`` to a JSON value (StateError if it is not one)."""
        encoded = _encode(value, f"state map {self.name!r}[{key!r}]")
        self._store.hset(self._key, _check_name(key, "a map key"), encoded)

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent)."""
        self._store.hset(self._key, _check_name(key, "a map key"), DELETED)

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every (key, value) pair, as of now."""
        for k, v in self._store.hgetall(self._key).items():
            yield k, json.loads(v)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._store.hget(self._key, key) is not None

    def __repr__(self) -> str:
        return f"StateMap({self.name!r})"


class StateKeySet:
    """A durable set of str members, each with a time (Unix seconds), in one sorted set."""

    def __init__(self, store: Store, key: str, name: str) -> None:
        self._store = store
        self._key = key
        self.name = name

    def add(self, member: str, ts: float | None = None) -> None:
        """Add ``member`` (or refresh its time) at ``ts`` (default: now)."""
        when = time.time() if ts is None else float(ts)
        if not math.isfinite(when):
            raise StateError(f"keyset {self.name!r}: time {ts!r} is not a finite number")
        self._store.zadd(self._key, _check_name(member, "a keyset member"), when)

    def discard(self, member: str) -> None:
        """Remove ``member`` (no error if absent)."""
        self._store.zadd(self._key, _check_name(member, "a keyset member"), DELETED)

    def prune(self, older_than_s: float) -> None:
        """Remove the members whose time is more than ``older_than_s`` seconds ago."""
        self._store.zprune(self._key, time.time() - older_than_s)

    def __contains__(self, member: object) -> bool:
        return isinstance(member, str) and self._store.zcontains(self._key, member)

    def __repr__(self) -> str:
        return f"StateKeySet({self.name!r})"


class AgentState:
    """The durable state of one agent (shared by its replicas); ``.replica`` is private.

    Made by the runtime (:meth:`for_broker`) or the test harness (:meth:`in_memory`).
    """

    def __init__(self, store: Store, graph: str, agent: str, replica: int,
                 scoped: bool = False) -> None:
        self._store = store
        self.graph = graph
        self.agent = agent
        self._replica = replica
        self._scoped = scoped
        self._values_key = self._key(_VALUES)
        self._replica_state: AgentState | None = self if scoped else None

    @classmethod
    def for_broker(cls, client: redis.Redis, graph: str, agent: str,
                   replica: int = 0) -> AgentState:
        """The state of ``agent`` of ``graph`` kept on the broker of ``client``."""
        return cls(Store(RedisStateBackend(client)), graph, agent, replica)

    @classmethod
    def in_memory(cls, graph: str = "test", agent: str = "agent", replica: int = 0,
                  backend: MemoryStateBackend | None = None) -> AgentState:
        """The same API kept in this process (tests); pass ``backend`` to share one."""
        return cls(Store(backend or MemoryStateBackend()), graph, agent, replica)

    @property
    def backend(self) -> StateBackend:
        """Where the flushed state lives."""
        return self._store.backend

    @property
    def store(self) -> Store:
        """The write buffer under this state (the runtime's: hooks, transactions)."""
        return self._store

    def _key(self, name: str) -> str:
        return state_key(self.graph, self.agent, name, self._replica if self._scoped else None)

    @property
    def replica(self) -> AgentState:
        """The same API, private to this replica (written in the same flush)."""
        if self._replica_state is None:
            self._replica_state = AgentState(self._store, self.graph, self.agent,
                                             self._replica, scoped=True)
        return self._replica_state

    def get(self, name: str, default: Any = None) -> Any:
        """The value stored under ``name``, or ``default``."""
        raw = self._store.hget(self._values_key, _check_name(name, "a state name"))
        return default if raw is None else json.loads(raw)

    def put(self, name: str, value: Any) -> None:
        """Store a JSON value under ``name`` (StateError if it is not JSON)."""
        encoded = _encode(value, f"state {name!r}")
        self._store.hset(self._values_key, _check_name(name, "a state name"), encoded)

    def delete(self, name: str) -> None:
        """Remove the value under ``name`` (no error if absent)."""
        self._store.hset(self._values_key, _check_name(name, "a state name"), DELETED)

    def map(self, name: str) -> StateMap:
        """The durable dict called ``name``."""
        return StateMap(self._store, self._key("map:" + _check_name(name, "a map name")), name)

    def keyset(self, name: str) -> StateKeySet:
        """The durable keyset called ``name``."""
        key = self._key("keys:" + _check_name(name, "a keyset name"))
        return StateKeySet(self._store, key, name)

    def checkpoint(self) -> object:
        """A token for :meth:`rollback` (the runtime takes one before each handler call)."""
        return self._store.checkpoint()

    def rollback(self, token: object) -> None:
        """Forget the unflushed writes made since ``checkpoint()`` (a failed handler's)."""
        self._store.rollback(token)

    @property
    def dirty(self) -> bool:
        """True while some writes are not in the backend yet."""
        return self._store.pending()

    def flush(self) -> None:
        """Write the buffered changes (of both scopes) in one pipeline, now.

        On BrokerUnavailable every change is kept for the next flush.
        """
        self._store.flush()

    def __repr__(self) -> str:
        scope = f"{self.agent}[{self._replica}]" if self._scoped else self.agent
        return f"AgentState({self.graph!r}, {scope!r})"
