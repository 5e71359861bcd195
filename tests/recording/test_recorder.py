"""procgraph.recording's live side against a real broker: Recorder and replay()."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from procgraph.brokers import EmbeddedBroker, free_port
from procgraph.errors import BrokerUnavailable, RecordingError
from procgraph.graph import load_graph
from procgraph.recording import (
    Recorder,
    RecordingWriter,
    check_file,
    graph_streams,
    read_all,
    replay,
)

GRAPH = """
name: rec
brokers: {main: {url: embedded}, side: {url: embedded}}
agents:
  counter: {class: "procgraph.examples:Counter"}
  scale: {class: "procgraph.examples:Scale", inputs: {readings: counter.out}, broker: side}
"""


def test_graph_streams_by_broker_url(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(GRAPH)
    plan = load_graph(tmp_path / "g.yaml")
    assert graph_streams(plan, {"main": "redis://a", "side": "redis://b"}) == {
        "redis://a": ["pg:rec:counter:out"], "redis://b": ["pg:rec:scale:scaled"]}


def test_record_then_replay_byte_for_byte(broker: EmbeddedBroker, tmp_path: Path) -> None:
    client = redis.Redis.from_url(broker.url)
    client.xadd("s:old", {"h": "before"})
    recorder = Recorder({broker.url: ["s:old", "s:new"]})  # starts after what is there now
    for i in range(3):
        client.xadd("s:new", {b"h": b"%d" % i, b"a:x": bytes([0, 255, i])})
    client.xadd("s:old", {"h": "after"})
    path = tmp_path / "r.pgrec"
    try:
        with RecordingWriter(path, {"streams": recorder.streams}) as writer:
            while writer.count < 4:
                recorder.read_into(writer, limit=4, wait_s=1.0)
    finally:
        recorder.close()
    header, records = read_all(path)
    assert header["streams"] == ["s:old", "s:new"]
    assert [(r.stream, r.fields) for r in records if r.stream == "s:new"] == [
        ("s:new", [(b"h", b"%d" % i), (b"a:x", bytes([0, 255, i]))]) for i in range(3)]
    assert [r.fields for r in records if r.stream == "s:old"] == [[(b"h", b"after")]]

    counts = list(replay(check_file(path), client, fast=True, stream_prefix="copy:"))
    assert counts[-1] == 4
    entries = client.xrange("copy:s:new")
    assert [list(fields.items()) for _, fields in entries] == [r.fields for r in records
                                                               if r.stream == "s:new"]
    client.close()


def test_from_start_and_limit(broker: EmbeddedBroker, tmp_path: Path) -> None:
    client = redis.Redis.from_url(broker.url)
    for i in range(10):
        client.xadd("s", {"n": str(i)})
    recorder = Recorder({broker.url: ["s"]}, from_start=True)
    with RecordingWriter(tmp_path / "r.pgrec") as writer:
        assert recorder.read_into(writer, limit=4, wait_s=0.1) == 4
    recorder.close()
    assert [r.fields for r in read_all(tmp_path / "r.pgrec")[1]] == [
        [(b"n", str(i).encode())] for i in range(4)]
    client.close()


def test_unreachable_broker_and_damaged_file(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnavailable):
        Recorder({url: ["s"]})
    (tmp_path / "bad.pgrec").write_bytes(b"PGREC\x01")
    with pytest.raises(RecordingError, match="truncated"):
        check_file(tmp_path / "bad.pgrec")
