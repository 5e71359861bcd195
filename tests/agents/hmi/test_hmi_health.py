"""The health table: rows from Heartbeat objects, restarts, rates, lag; reading a real broker."""

from __future__ import annotations

import time

import pytest
import redis
from procgraph.agents.hmi.health import HealthTracker, LineHealthReader
from procgraph.agents.hmi.state import LiveState

from procgraph.brokers import EmbeddedBroker, free_port
from procgraph.constants import heartbeat_key, stream_key
from procgraph.errors import BrokerUnavailable
from procgraph.health import GroupLag, Heartbeat, InputHealth, OutputHealth, write_heartbeat


def beat(replica: int, ts: float, count: int, started: float = 100.0, *, agent: str = "clf",
         replicas: int = 1, restarts: int = 0, dead: int = 0, graph: str = "g") -> Heartbeat:
    return Heartbeat(graph=graph, agent=agent, replica=replica, replicas=replicas, pid=1000,
                     started=started, ts=ts, restarts=restarts,
                     inputs={"frames": InputHealth(count=count, errors=1, dead=dead,
                                                   latency_ms=4.0 + replica)},
                     outputs={"verdicts": OutputHealth(count=count, blocked_s=0.25)})


def test_rates_restarts_and_replicas() -> None:
    tracker = HealthTracker()
    tracker.update([beat(0, 200.0, 0), beat(1, 200.0, 0)], now=200.0)
    rows = tracker.update([beat(0, 201.0, 10), beat(1, 201.0, 30)],
                          {"clf": GroupLag(lag=7, pending=2)}, now=201.0)
    (row,) = rows
    assert (row["alive"], row["expected"], row["status"]) == (2, 2, "ok")
    assert row["rate_in"] == 40.0 and row["rate_out"] == 40.0
    assert row["latency_p50_ms"] == 5.0 and (row["lag"], row["pending"]) == (7, 2)
    assert (row["errors"], row["dead"], row["blocked_s"]) == (2, 0, 0.5)
    assert row["uptime_s"] == 101.0 and row["last_seen_s"] == 0.0
    (row,) = tracker.update([beat(0, 202.0, 20)], now=202.0)  # replica 1 gone
    assert (row["alive"], row["expected"], row["status"]) == (1, 2, "degraded")
    # replica 1 comes back with a new start time: a restart this screen has seen
    (row,) = tracker.update([beat(0, 203.0, 25), beat(1, 203.0, 1, started=202.5)], now=203.0)
    assert row["restarts"] == 1 and row["alive"] == 2 and row["status"] == "ok"
    (row,) = tracker.update([beat(0, 204.0, 35), beat(1, 204.0, 6, started=202.5)], now=204.0)
    assert row["rate_in"] == 15.0, "rates of the restarted replica start from its new counts"
    (row,) = tracker.update([], now=210.0)
    assert row["status"] == "down" and row["alive"] == 0 and row["rate_in"] == 0.0
    assert row["uptime_s"] is None and row["last_seen_s"] == 6.0


def test_reads_the_mapping_read_heartbeats_returns() -> None:
    tracker = HealthTracker()
    beats = {("clf", 0): beat(0, 10.0, 1), ("cam", 0): beat(0, 10.0, 1, agent="cam")}
    rows = tracker.update(beats, now=10.0)
    assert [r["agent"] for r in rows] == ["cam", "clf"]


def test_expected_replicas_and_supervisor_restarts_from_the_heartbeat() -> None:
    tracker = HealthTracker()
    (row,) = tracker.update([beat(0, 10.0, 1, replicas=3, restarts=2)], now=10.0)
    assert (row["alive"], row["expected"], row["status"]) == (1, 3, "degraded")
    assert row["restarts"] == 2, "the supervisor's count wins when it is higher"


def test_dead_letters_warn() -> None:
    (row,) = HealthTracker().update([beat(0, 10.0, 1, dead=3)], now=10.0)
    assert row["status"] == "warn" and row["dead"] == 3


def test_lag_rows_for_readers_without_heartbeat() -> None:
    rows = HealthTracker().update([beat(0, 10.0, 1)], {"hmi": GroupLag(lag=None, pending=4)},
                                  now=10.0)
    hmi = next(r for r in rows if r["agent"] == "hmi")
    assert (hmi["status"], hmi["alive"], hmi["lag"], hmi["pending"]) == ("down", 0, None, 4)
    clf = next(r for r in rows if r["agent"] == "clf")
    assert clf["lag"] is None and clf["pending"] is None, "no consumer group: no lag known"


def test_live_state_serves_the_rows() -> None:
    state = LiveState()
    state.set_health({("clf", 0): beat(0, 10.0, 1)}, {"clf": GroupLag(lag=1, pending=0)},
                     now=10.0)
    (row,) = state.snapshot()["health"]
    assert row["agent"] == "clf" and row["lag"] == 1


def test_reader_on_a_real_broker_skips_a_malformed_heartbeat(valkey: EmbeddedBroker) -> None:
    client = redis.Redis.from_url(valkey.url)
    now = time.time()
    write_heartbeat(client, beat(0, now, 5, started=now - 3, graph="line"))
    client.set(heartbeat_key("line", "broken", 0), b"{not json")
    client.set(heartbeat_key("line", "other", 0), b'{"v": 1, "agent": "other"}')
    write_heartbeat(client, beat(0, now, 1, agent="elsewhere", graph="another"))
    stream = stream_key("line", "cam", "frames")
    client.xgroup_create(stream, "clf", id="0", mkstream=True)
    for i in range(3):
        client.xadd(stream, {"n": str(i)})
    client.xreadgroup("clf", "c0", {stream: ">"}, count=1)

    reader = LineHealthReader(lambda: client, "line")
    beats, lags = reader.read()
    assert list(beats) == [("clf", 0)] and beats[("clf", 0)].inputs["frames"].count == 5
    assert lags == {"clf": GroupLag(lag=2, pending=1)}
    state = LiveState(graph="line")
    state.set_health(beats, lags)
    (row,) = state.snapshot()["health"]
    assert (row["agent"], row["status"], row["lag"], row["pending"]) == ("clf", "ok", 2, 1)


def test_reader_raises_broker_unavailable() -> None:
    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    with pytest.raises(BrokerUnavailable):
        LineHealthReader(client, "line").read()


def test_a_frozen_heartbeat_is_down_before_its_key_expires() -> None:
    """A frozen process (SIGSTOP, a hung GIL) leaves its last heartbeat readable for five
    periods, and the supervisor restarts it about a second after that: the screen must show
    it down from FROZEN_S on, not only in that short gap (seen in CI: the page never said
    back_cam was down)."""
    from procgraph.agents.hmi.health import FROZEN_S

    tracker = HealthTracker()
    (row,) = tracker.update([beat(0, 100.0, 1)], now=100.0)
    assert row["status"] == "ok"
    (row,) = tracker.update([beat(0, 100.0, 1)], now=100.0 + FROZEN_S - 0.5)
    assert row["status"] == "ok", "a late beat is not yet a frozen one"
    (row,) = tracker.update([beat(0, 100.0, 1)], now=100.0 + FROZEN_S + 0.5)
    assert (row["status"], row["alive"], row["rate_in"]) == ("down", 0, 0.0)
    assert row["last_seen_s"] == FROZEN_S + 0.5, "seen last when its heartbeat last changed"
    (row,) = tracker.update([beat(0, 104.5, 9)], now=104.5)
    assert (row["status"], row["alive"]) == ("ok", 1), "beating again: alive again"
