"""procgraph.delivery.claims on a real broker, rule by rule: who may take which entries."""

from __future__ import annotations

import threading
import time

import redis

from procgraph.constants import heartbeat_key
from procgraph.delivery.claims import Claimer, EntryKeeper, keep_own
from procgraph.transport.reader import GroupReader, ReadSpec

STREAM = "pg:rules:src:out"
PERIOD_S = 0.2  # heartbeat period of these tests: stale after 0.6 s, dead entries idle 0.4 s


def _reader(client: redis.Redis, consumer: str, stop: threading.Event) -> GroupReader:
    reader = GroupReader(client, [ReadSpec(STREAM, "sink", "items", "0")], consumer, stop)
    reader.ensure_groups()
    return reader


def _fill(client: redis.Redis, n: int) -> None:
    for i in range(n):
        client.xadd(STREAM, {b"n": str(i).encode()})


def _claimer(reader: GroupReader, client: redis.Redis, claim_idle_ms: int) -> Claimer:
    return Claimer(reader, graph="rules", agent="sink", heartbeats=client,
                   claim_idle_ms=claim_idle_ms, period_s=PERIOD_S)


def _beat(client: redis.Redis, replica: int) -> None:
    client.set(heartbeat_key("rules", "sink", replica), b"{}", px=int(5 * PERIOD_S * 1000))


def test_never_claims_its_own_entries(broker):
    client = redis.Redis.from_url(broker.url)
    stop = threading.Event()
    own = _reader(client, "sink-0", stop)
    _fill(client, 10)
    assert len(own.read(100, 0)) == 10
    time.sleep(0.3)
    assert _claimer(own, client, claim_idle_ms=100).claim() == []


def test_live_sibling_keeps_its_entries_dead_one_loses_them(broker):
    """A sibling with a fresh heartbeat keeps its entries however idle; once its heartbeat
    is stale, they go to the claimer, each to one claimer only."""
    client = redis.Redis.from_url(broker.url)
    stop = threading.Event()
    owner = _reader(client, "sink-0", stop)
    _fill(client, 10)
    assert len(owner.read(100, 0)) == 10
    claimer = _claimer(_reader(client, "sink-1", stop), client, claim_idle_ms=100)
    other = _claimer(_reader(client, "sink-2", stop), client, claim_idle_ms=100)
    _beat(client, 1)
    _beat(client, 2)
    time.sleep(0.5)  # idle past claim_idle_ms and the dead-entry idle
    _beat(client, 0)  # ... and sink-0's heartbeat fresh
    assert claimer.claim() == []
    time.sleep(0.7)  # sink-0's heartbeat not refreshed for 3 periods: gone
    got = claimer.claim()
    assert sorted(int(f[b"n"]) for _, (_, f) in got) == list(range(10))
    assert other.claim() == []  # idle reset by the first claim: no one gets them twice


def test_restarted_owner_rereading_its_entries_keeps_them(broker):
    """The race with a restart: the owner re-reads its pending entries just before a
    sibling that saw it dead claims them. The claim finds them no longer idle."""
    client = redis.Redis.from_url(broker.url)
    stop = threading.Event()
    owner = _reader(client, "sink-0", stop)
    _fill(client, 5)
    assert len(owner.read(100, 0)) == 5
    claimer = _claimer(_reader(client, "sink-1", stop), client, claim_idle_ms=60_000)
    time.sleep(0.5)  # no heartbeat of sink-0 at all, entries idle past 0.4 s
    assert len(owner.read(100, 0, pending=True)) == 5  # the restarted owner, before the claim
    assert claimer.claim() == []


def test_keeper_protects_a_long_handler_from_the_fallback(broker):
    """A consumer whose heartbeat cannot be known loses entries idle ``claim_idle_ms``
    (the fallback), but not while its keeper runs."""
    client = redis.Redis.from_url(broker.url)
    stop = threading.Event()
    owner = _reader(client, "tool", stop)  # not <agent>-<i>: no heartbeat to judge by
    _fill(client, 8)
    assert len(owner.read(100, 0)) == 8
    claimer = _claimer(_reader(client, "sink-1", stop), client, claim_idle_ms=300)
    keeper_stop = threading.Event()
    keeper = EntryKeeper([owner], keeper_stop, claim_idle_ms=300, period_s=PERIOD_S)
    keeper.start()
    try:
        for _ in range(6):
            time.sleep(0.2)
            assert claimer.claim() == []
    finally:
        keeper_stop.set()
        keeper.join(5)
    time.sleep(0.4)
    assert len(claimer.claim()) == 8


def test_keep_own_counts_no_delivery(broker):
    client = redis.Redis.from_url(broker.url)
    stop = threading.Event()
    owner = _reader(client, "sink-0", stop)
    _fill(client, 3)
    owner.read(100, 0)
    time.sleep(0.1)
    assert keep_own(owner, 50) == 3
    rows = client.xpending_range(STREAM, "sink", "-", "+", 10)
    assert {r["times_delivered"] for r in rows} == {1}
    assert max(r["time_since_delivered"] for r in rows) < 50
