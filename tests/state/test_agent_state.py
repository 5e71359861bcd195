"""procgraph.state: the AgentState API against a real broker (Valkey and Redis) and in memory."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from procgraph.constants import state_key
from procgraph.errors import BrokerUnavailable, StateError
from procgraph.state import AgentState, MemoryStateBackend
from procgraph.transport.link import Link


@pytest.fixture(params=["broker", "memory"])
def state(request: pytest.FixtureRequest, broker) -> Iterator[AgentState]:
    """The state of agent ``join`` replica 1 of graph ``g``, on a broker or in memory.

    (The in-memory case runs once per broker kind too: a parametrized session fixture
    cannot be requested for one param only.)
    """
    if request.param == "broker":
        yield AgentState.for_broker(redis.Redis.from_url(broker.url), "g", "join", 1)
    else:
        yield AgentState.in_memory("g", "join", 1)


def _reopen(state: AgentState) -> AgentState:
    """A fresh AgentState on the same backend, as a restarted replica gets it."""
    backend = state.backend
    if isinstance(backend, MemoryStateBackend):
        return AgentState.in_memory("g", "join", 1, backend=backend)
    return AgentState.for_broker(backend.client, "g", "join", 1)  # type: ignore[attr-defined]


def test_values_round_trip(state: AgentState) -> None:
    value = {"seq": 7, "ok": True, "parts": ["a", "b"], "ratio": 0.5, "none": None}
    state.put("cursor", value)
    assert state.get("cursor") == value  # before the flush: reads see own writes
    assert state.get("missing", 42) == 42
    state.flush()
    again = _reopen(state)
    assert again.get("cursor") == value
    again.delete("cursor")
    assert again.get("cursor") is None
    again.flush()
    assert _reopen(state).get("cursor", "gone") == "gone"


def test_a_returned_value_is_a_copy(state: AgentState) -> None:
    state.put("d", {"a": [1]})
    got = state.get("d")
    got["a"].append(2)
    assert state.get("d") == {"a": [1]}


def test_map_round_trip(state: AgentState) -> None:
    m = state.map("pending")
    m.put("p1", {"front": 1})
    m.put("p2", {"back": 2})
    m.put("p3", 3)
    m.delete("p3")
    assert "p1" in m and "p3" not in m and 5 not in m
    assert m.get("p2") == {"back": 2} and m.get("p3", "none") == "none"
    assert m.get_many(["p1", "p3", "p9"]) == {"p1": {"front": 1}}
    state.flush()
    m2 = _reopen(state).map("pending")
    assert dict(m2.items()) == {"p1": {"front": 1}, "p2": {"back": 2}}
    m2.put("p4", [4])
    m2.delete("p1")
    assert dict(m2.items()) == {"p2": {"back": 2}, "p4": [4]}  # overlay on stored
    assert m2.get_many(["p1", "p2", "p4"]) == {"p2": {"back": 2}, "p4": [4]}


def test_keyset_add_discard_prune(state: AgentState) -> None:
    s = state.keyset("decided")
    now = time.time()
    s.add("old", ts=now - 3600)
    s.add("new")
    s.add("gone")
    s.discard("gone")
    assert "old" in s and "new" in s and "gone" not in s
    state.flush()
    st2 = _reopen(state)
    s2 = st2.keyset("decided")
    assert "old" in s2 and "new" in s2
    s2.prune(older_than_s=60)
    assert "old" not in s2 and "new" in s2  # the prune is seen before it is flushed
    s2.add("older", ts=now - 7200)  # added after the prune: kept, as the broker would
    assert "older" in s2
    assert "old" in _reopen(state).keyset("decided")  # an unflushed prune is not stored yet
    st2.flush()
    s3 = _reopen(state).keyset("decided")
    assert "old" not in s3 and "new" in s3 and "older" in s3


def test_writes_are_buffered_until_flush(broker) -> None:
    client = redis.Redis.from_url(broker.url)
    state = AgentState.for_broker(client, "g", "cam", 0)
    state.put("seq", 1)
    state.map("m").put("k", "v")
    state.keyset("s").add("x")
    assert state.dirty
    assert client.keys("pg:g:state:*") == []  # nothing written yet
    state.flush()
    assert not state.dirty
    assert client.hget(state_key("g", "cam", "values"), "seq") == b"1"
    assert client.hget(state_key("g", "cam", "map:m"), "k") == b'"v"'
    assert client.zscore(state_key("g", "cam", "keys:s"), "x") is not None
    state.flush()  # nothing to write: no round trip, no error


def test_one_flush_is_one_transaction(broker) -> None:
    client = redis.Redis.from_url(broker.url)
    state = AgentState.for_broker(client, "g", "cam", 0)
    state.put("warm", 0)  # the state's own connection is made (its handshake not counted)
    state.flush()
    for i in range(50):
        state.put(f"v{i}", i)
        state.map("m").put(f"k{i}", i)
        state.replica.put(f"r{i}", i)
    before = client.info("stats")["total_commands_processed"]
    state.flush()
    after = client.info("stats")["total_commands_processed"]
    # MULTI, one HSET per hash (3), EXEC; plus the INFO call itself
    assert after - before <= 6, after - before


def test_replica_scope_is_private(state: AgentState) -> None:
    state.put("shared", "all")
    state.replica.put("mine", "r1")
    assert state.get("mine") is None and state.replica.get("shared") is None
    assert state.replica.replica is state.replica
    state.flush()  # one flush writes both scopes
    other = AgentState.in_memory("g", "join", 2, backend=state.backend) if isinstance(
        state.backend, MemoryStateBackend) else AgentState.for_broker(
        state.backend.client, "g", "join", 2)  # type: ignore[attr-defined]
    assert other.get("shared") == "all"
    assert other.replica.get("mine") is None
    assert _reopen(state).replica.get("mine") == "r1"


def test_replica_keys_follow_the_constants(broker) -> None:
    client = redis.Redis.from_url(broker.url)
    state = AgentState.for_broker(client, "g", "cam", 3)
    state.replica.keyset("seen").add("a")
    state.flush()
    assert client.exists(state_key("g", "cam", "keys:seen", replica=3))


@pytest.mark.parametrize("bad", [b"bytes", {1: "int key"}, float("nan"), {"x": object()},
                                 (1, 2), {"a": [set()]}])
def test_non_json_values_are_refused_at_put(bad: object) -> None:
    state = AgentState.in_memory()
    with pytest.raises(StateError):
        state.put("x", bad)
    with pytest.raises(StateError):
        state.map("m").put("k", bad)
    assert not state.dirty


def test_bad_names_are_refused() -> None:
    state = AgentState.in_memory()
    with pytest.raises(StateError):
        state.map("")
    with pytest.raises(StateError):
        state.keyset("s").add(3)  # type: ignore[arg-type]


def test_broker_away_raises_broker_unavailable_and_keeps_writes(broker) -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)
    state = AgentState.for_broker(dead, "g", "cam", 0)
    with pytest.raises(BrokerUnavailable):
        state.get("x")
    state.put("x", 1)
    with pytest.raises(BrokerUnavailable):
        state.flush()
    assert state.dirty and state.get("x") == 1  # kept for the next flush
    state.put("y", 2)
    live = redis.Redis.from_url(broker.url)
    backend = state._store.backend  # type: ignore[attr-defined]  # "the broker is back"
    backend.client, backend.link = live, Link(live)
    state.flush()
    assert live.hgetall(state_key("g", "cam", "values")) == {b"x": b"1", b"y": b"2"}
