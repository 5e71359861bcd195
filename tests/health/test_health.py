"""procgraph.health against a real broker: heartbeats, streams, lag, dead letters, checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from procgraph.brokers import EmbeddedBroker, free_port
from procgraph.errors import BrokerUnavailable
from procgraph.graph import GraphPlan, load_graph
from procgraph.health import (
    HEARTBEAT_VERSION,
    Heartbeat,
    InputHealth,
    OutputHealth,
    RateMeter,
    check_line,
    clear_heartbeat,
    dead_letters,
    group_lag,
    line_streams,
    parse_heartbeat,
    read_heartbeats,
    write_heartbeat,
)

GRAPH = """
name: hl
brokers: {main: {url: embedded}}
agents:
  counter: {class: "procgraph.examples:Counter"}
  scale: {class: "procgraph.examples:Scale", inputs: {readings: counter.out}, replicas: 2}
"""


def beat(agent: str, replica: int = 0, graph: str = "hl", **kw: object) -> Heartbeat:
    now = time.time()
    values: dict[str, object] = {"graph": graph, "agent": agent, "replica": replica, "pid": 1,
                                 "started": now - 10, "ts": now, **kw}
    return Heartbeat.model_validate(values)


@pytest.fixture
def client(broker: EmbeddedBroker) -> redis.Redis:
    return redis.Redis.from_url(broker.url)


@pytest.fixture
def plan(tmp_path: Path) -> GraphPlan:
    (tmp_path / "g.yaml").write_text(GRAPH)
    return load_graph(tmp_path / "g.yaml")


def test_write_then_read_by_scan_and_by_replica(client: redis.Redis) -> None:
    write_heartbeat(client, beat("counter", outputs={"out": OutputHealth(count=5)}))
    write_heartbeat(client, beat("scale", 1, inputs={"readings": InputHealth(count=3)}))
    write_heartbeat(client, beat("other", graph="not-hl"))
    found = read_heartbeats(client, "hl")
    assert set(found) == {("counter", 0), ("scale", 1)}
    assert found[("counter", 0)].outputs["out"].count == 5
    assert found[("scale", 1)].inputs["readings"].count == 3
    assert found[("scale", 1)].name == "scale[1]"
    assert set(read_heartbeats(client, "hl", [("scale", 0), ("scale", 1)])) == {("scale", 1)}
    clear_heartbeat(client, "hl", "scale", 1)
    assert set(read_heartbeats(client, "hl")) == {("counter", 0)}


def test_a_heartbeat_expires(client: redis.Redis) -> None:
    write_heartbeat(client, beat("counter"), period_s=0.02)  # expires after 5 periods
    assert read_heartbeats(client, "hl")
    time.sleep(0.3)
    assert not read_heartbeats(client, "hl")


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"{}", b'{"v": 99}', b"\xff\xfe"])
def test_malformed_or_other_version_heartbeats_are_skipped(raw: bytes | None) -> None:
    assert parse_heartbeat(raw) is None


def test_readers_skip_malformed_and_other_version_records(client: redis.Redis) -> None:
    write_heartbeat(client, beat("counter"))
    client.set("pg:hl:hb:scale:0", b"{not json")
    client.set("pg:hl:hb:scale:1", beat("scale", 1, v=HEARTBEAT_VERSION + 1).model_dump_json())
    assert set(read_heartbeats(client, "hl")) == {("counter", 0)}


def test_line_streams_group_lag_and_dead_letters(client: redis.Redis) -> None:
    for i in range(5):
        client.xadd("pg:hl:counter:out", {"h": str(i)})
    client.xadd("pg:hl:counter:out:dead", {"h": "x"})
    client.xadd("pg:hl:counter:out:dead", {"h": "y"})
    client.set("pg:hl:hb:counter:0", "not a stream")
    client.xadd("pg:other:a:out", {"h": "1"})
    assert line_streams(client, "hl") == ["pg:hl:counter:out"]

    client.xgroup_create("pg:hl:counter:out", "scale", id="0")
    client.xreadgroup("scale", "c1", {"pg:hl:counter:out": ">"}, count=2)
    lag = group_lag(client, ["pg:hl:counter:out", "pg:hl:missing"])
    assert set(lag) == {"scale"}
    assert lag["scale"].pending == 2
    assert lag["scale"].lag == 3
    assert group_lag(client, []) == {}
    assert dead_letters(client, ["pg:hl:counter:out", "pg:hl:nothing"]) == {
        "pg:hl:counter:out": 2, "pg:hl:nothing": 0}


def test_check_line(client: redis.Redis, broker: EmbeddedBroker, plan: GraphPlan) -> None:
    urls = {"main": broker.url}
    result = check_line(plan, urls)
    assert not result.ok and result.alive == []
    assert result.missing == ["counter[0]", "scale[0]", "scale[1]"]
    write_heartbeat(client, beat("counter"))
    write_heartbeat(client, beat("scale", 1))
    result = check_line(plan, urls)
    assert result.alive == ["counter[0]", "scale[1]"] and result.missing == ["scale[0]"]
    assert check_line(plan, urls, agent="scale", replica=1).ok
    assert check_line(plan, urls, agent="scale").missing == ["scale[0]"]
    with pytest.raises(KeyError):
        check_line(plan, urls, agent="nope")


def test_unreachable_broker_is_broker_unavailable(plan: GraphPlan) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    dead = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    for call in (lambda: read_heartbeats(dead, "hl"), lambda: line_streams(dead, "hl"),
                 lambda: group_lag(dead, ["s"]), lambda: dead_letters(dead, ["s"]),
                 lambda: write_heartbeat(dead, beat("counter"))):
        with pytest.raises(BrokerUnavailable):
            call()
    with pytest.raises(BrokerUnavailable, match=f"broker 'main' at {url}"):
        check_line(plan, {"main": url})


def test_rate_meter_from_count_changes_and_restarts() -> None:
    meter = RateMeter()
    first = beat("counter", started=100.0, ts=110.0)
    assert meter.rate("k", first, 50) == pytest.approx(5.0)  # first look: average since start
    later = beat("counter", started=100.0, ts=112.0)
    assert meter.rate("k", later, 70) == pytest.approx(10.0)  # 20 in 2 s
    assert meter.rate("k", later, 70) == pytest.approx(10.0)  # not refreshed: same rate
    restarted = beat("counter", pid=2, started=200.0, ts=204.0)
    assert meter.rate("k", restarted, 8) == pytest.approx(2.0)  # new process: its own average
    assert meter.rate("other", restarted, 0) == 0.0
