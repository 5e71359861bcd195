"""Dead letters on a real broker: any decode failure is dead-lettered, the record and the
dead stream are capped in bytes, and the reason is one short line."""

from __future__ import annotations

import json
import threading

import pytest
import redis

from pgtest_agents import keys as _keys
from pgtest_agents import seen as _seen
from pgtest_util import wait_for
from procgraph.constants import dead_letter_key
from procgraph.delivery import deadletter
from procgraph.delivery.deadletter import dead_letter
from procgraph.transport.reader import GroupReader, ReadSpec

GRAPH = """
name: hostile
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 40, rate_hz: 40}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out}}
"""
STREAM = "pg:hostile:src:out"


def _header(**over: object) -> dict[str, object]:
    h: dict[str, object] = {"v": 1, "type": "Item", "id": "x", "key": "kx", "ts_ns": 1,
                            "trace": [], "data": {"n": 1}, "arrays": {}}
    h.update(over)
    return h


def _sink_restarts(sup) -> int:
    return next(r for r in sup.replicas if r.agent.name == "sink").restarts


def test_item01_huge_int_header_is_dead_lettered(broker, run_graph) -> None:
    """Issue 9 item 1: a ~5 KB header with a 5000-digit integer in ts_ns, v or data is
    dead-lettered; the reading agent does not die and handles every valid message."""
    client = redis.Redis.from_url(broker.url)
    huge = "9" * 5000
    bodies = [json.dumps(_header()).replace('"ts_ns": 1', f'"ts_ns": {huge}'),
              json.dumps(_header()).replace('"v": 1', f'"v": {huge}'),
              json.dumps(_header()).replace('"n": 1', f'"n": {huge}')]
    assert all(len(b) > 5000 for b in bodies)
    with run_graph(GRAPH, redis_url=broker.url) as sup:
        wait_for(lambda: client.exists(STREAM), 10, "the stream")
        for body in bodies:
            client.xadd(STREAM, {b"h": body.encode()})
        wait_for(lambda: client.xlen(dead_letter_key(STREAM)) >= 3, 20, "3 dead letters")
        wait_for(lambda: _seen(client, "sink") == _keys(40), 20, "every valid item")
        assert _sink_restarts(sup) == 0, "a huge integer must not end the agent"
    reasons = [f[b"dead:reason"].decode() for _, f in client.xrange(dead_letter_key(STREAM))]
    assert len(reasons) == 3
    assert all(r.startswith("decode:") and len(r) <= 400 for r in reasons), reasons
    assert sum("5000 digits" in r or "digits" in r for r in reasons) == 3, reasons
    assert client.xpending(STREAM, "sink")["pending"] == 0


def test_item02_ten_mb_non_utf8_header_gives_a_small_dead_letter(broker, run_graph,
                                                                 tmp_path) -> None:
    """Issue 9 item 2: a 10 MB non-UTF-8 header gives a capped dead-letter record (reason a
    few hundred bytes, the header cut with dead:cut saying the original size) and no long
    log line; a 3 MB one (under the header cap) too."""
    client = redis.Redis.from_url(broker.url)
    big = b"\xff\xfe" + b"\x80\n\x1b[31m" * (10 * 2**20 // 7)
    mid = b'{"v":1,"key":"' + b"\xc3\x28" * (3 * 2**20 // 2) + b'"}'
    with run_graph(GRAPH, redis_url=broker.url) as sup:
        wait_for(lambda: client.exists(STREAM), 10, "the stream")
        client.xadd(STREAM, {b"h": big})
        client.xadd(STREAM, {b"h": mid, b"a:x": b"1"})
        wait_for(lambda: client.xlen(dead_letter_key(STREAM)) >= 2, 20, "2 dead letters")
        wait_for(lambda: _seen(client, "sink") == _keys(40), 20, "every valid item")
        assert _sink_restarts(sup) == 0
    cut, whole = (f for _, f in client.xrange(dead_letter_key(STREAM)))
    assert sum(len(k) + len(v) for k, v in cut.items()) < 8 * 1024
    assert cut[b"dead:cut"] == str(len(b"h") + len(big)).encode()
    assert cut[b"h"] == big[:4096]
    assert b"over the limit" in cut[b"dead:reason"]
    assert (whole[b"h"], whole[b"a:x"]) == (mid, b"1")  # under the record cap: kept whole
    assert b"dead:cut" not in whole
    assert b"not UTF-8" in whole[b"dead:reason"]
    for fields in (cut, whole):
        reason = fields[b"dead:reason"].decode()
        assert len(reason) <= 300 + 40 and "\n" not in reason and "\x1b" not in reason
    log = (tmp_path / "supervisor.log").read_text()
    assert max(map(len, log.splitlines())) < 4000


@pytest.fixture
def reader(broker):
    client = redis.Redis.from_url(broker.url)
    stop = threading.Event()
    rd = GroupReader(client, [ReadSpec("pg:dl:a:out", "b", "items", "0")], "b-0", stop)
    rd.ensure_groups()
    return rd


def _dead_letter_n(reader: GroupReader, n: int, value_bytes: int) -> None:
    client = reader.client
    for i in range(n):
        client.xadd("pg:dl:a:out", {b"h": b"x" * value_bytes, b"i": str(i).encode()})
    for stream, entry in reader.read(n, 100):
        dead_letter(reader, stream, entry, "test", "b-0")


def _actual_bytes(client: redis.Redis, key: str) -> int:
    return sum(len(k) + len(v) for _, f in client.xrange(key) for k, v in f.items())


def test_dead_stream_is_capped_in_bytes(reader, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadletter, "DEAD_STREAM_MAX_BYTES", 1024 * 1024)
    _dead_letter_n(reader, 40, 64 * 1024)
    key = dead_letter_key("pg:dl:a:out")
    client = reader.client
    kept = _actual_bytes(client, key)
    assert 1024 * 1024 - 70 * 1024 < kept <= 1024 * 1024
    assert int(client.get(key + ":bytes")) == kept
    ids = [f[b"i"] for _, f in client.xrange(key)]
    assert ids[-1] == b"39" and len(ids) < 40  # the oldest went first
    assert client.xpending("pg:dl:a:out", "b")["pending"] == 0


def test_dead_stream_entry_cap_and_lost_total(reader, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadletter, "DEAD_LETTER_MAXLEN", 5)
    _dead_letter_n(reader, 8, 10)
    key = dead_letter_key("pg:dl:a:out")
    client = reader.client
    assert client.xlen(key) == 5
    client.delete(key + ":bytes")  # e.g. deleted by hand: recounted on the next record
    _dead_letter_n(reader, 1, 10)
    assert client.xlen(key) == 5
    assert int(client.get(key + ":bytes")) == _actual_bytes(client, key)


def test_record_of_many_fields_is_cut() -> None:
    fields = {f"a:{i}".encode(): b"" for i in range(10_000)}
    fields[b"h"] = b"{}"
    record = deadletter.dead_record(fields, "r\n" * 1000, "b-0", b"1-0", "s")
    assert set(record) == {b"h", b"dead:cut", b"dead:reason", b"dead:agent",
                           b"dead:source_id", b"dead:stream"}
    assert len(record[b"dead:reason"]) < 400 and b"\n" not in record[b"dead:reason"]
