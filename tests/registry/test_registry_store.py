"""ModelRegistry on a real broker: push, list, versions, fetch, rollback, events, errors."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from registry_models import tiny_model

from procgraph.brokers import EmbeddedBroker, free_port
from procgraph.constants import model_blob_key, model_channel
from procgraph.errors import BrokerUnavailable, ProcgraphError
from procgraph.registry import (
    ModelChanged,
    ModelIntegrityError,
    ModelRegistry,
    ModelRegistryError,
)


@pytest.fixture()
def client(broker: EmbeddedBroker) -> Iterator[redis.Redis]:
    """A client on the (emptied) broker of this test."""
    c = redis.Redis.from_url(broker.url)
    yield c
    c.close()


def test_push_list_current_fetch(client: redis.Redis, tmp_path: Path) -> None:
    reg = ModelRegistry(client)
    v1, v2 = tiny_model(0.1), tiny_model(0.9)
    path = tmp_path / "m.onnx"
    path.write_bytes(v1)
    assert reg.current("parts") is None and reg.list() == [] and reg.versions("parts") == []
    r1 = reg.push("parts", path)
    r2 = reg.push("parts", v2)
    r3 = reg.push("parts", v1, version="exp-7")
    r4 = reg.push("parts", v2)
    assert [r.version for r in (r1, r2, r3, r4)] == ["1", "2", "exp-7", "3"]
    assert reg.versions("parts") == ["1", "2", "exp-7", "3"]
    assert r1.sha256 == hashlib.sha256(v1).hexdigest() and r1.size == len(v1)
    assert r1.pushed <= r2.pushed <= time.time()
    assert reg.current("parts") == r4
    listed = reg.list("parts")
    assert [(r.version, r.current) for r in listed] == [
        ("1", False), ("2", False), ("exp-7", False), ("3", True)]
    reg.push("other", v1)
    assert reg.names() == ["other", "parts"] and len(reg.list()) == 5
    assert reg.fetch("parts", "2") == v2 and reg.fetch("parts", "exp-7") == v1
    with pytest.raises(ModelRegistryError, match="already has version '2'"):
        reg.push("parts", v1, version="2")
    with pytest.raises(ModelRegistryError, match="no version '9'"):
        reg.fetch("parts", "9")
    with pytest.raises(ModelRegistryError, match="not valid"):
        reg.push("bad name", v1)


def test_rejects_non_onnx(client: redis.Redis, tmp_path: Path) -> None:
    reg = ModelRegistry(client)
    for data in (b"", b"definitely not a model", b"\x08\x07" + b"\xff" * 20):
        with pytest.raises(ModelRegistryError, match="ONNX"):
            reg.push("parts", data)
    with pytest.raises(ModelRegistryError, match="cannot read"):
        reg.push("parts", tmp_path / "missing.onnx")
    assert reg.list() == []


def test_rollback_and_events(client: redis.Redis) -> None:
    reg = ModelRegistry(client)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(model_channel("parts"))
    try:
        pushed = [reg.push("parts", tiny_model(v)) for v in (0.1, 0.9, 0.5)]
        assert reg.rollback("parts").version == "2"
        assert reg.rollback("parts").version == "1"
        assert reg.current("parts").version == "1"  # type: ignore[union-attr]
        with pytest.raises(ModelRegistryError, match="nothing to roll back"):
            reg.rollback("parts")
        with pytest.raises(ModelRegistryError, match="no model 'nope'"):
            reg.rollback("nope")
        assert reg.push("parts", tiny_model(0.7)).version == "4"
        events: list[ModelChanged] = []
        deadline = time.monotonic() + 5
        while len(events) < 6 and time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=0.5)
            if msg is not None:
                events.append(ModelChanged.parse(msg["data"]))
        assert [(e.event, e.version) for e in events] == [
            ("push", "1"), ("push", "2"), ("push", "3"), ("rollback", "2"), ("rollback", "1"),
            ("push", "4")]
        assert {e.name for e in events} == {"parts"}
        assert events[4].sha256 == pushed[0].sha256
    finally:
        pubsub.close()


def test_detects_corrupt_bytes(client: redis.Redis) -> None:
    reg = ModelRegistry(client)
    reg.push("parts", tiny_model(0.1))
    client.set(model_blob_key("parts", "1"), tiny_model(0.2))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        reg.fetch("parts", "1")
    assert issubclass(ModelIntegrityError, ProcgraphError)


def test_model_changed_parses_strictly() -> None:
    good = ModelChanged("rollback", "parts", "2", "ab" * 32)
    assert ModelChanged.parse(good.to_json()) == good
    assert ModelChanged.parse(good.to_json().encode()) == good
    for raw in (b"not json", b"[1, 2]", b'{"event": "push"}', b"\xff\xfe",
                b'{"event": "delete", "name": "p", "version": "1", "sha256": "x"}',
                b'{"event": "push", "name": "p", "version": 1, "sha256": "x"}',
                b'{"event": "push", "name": "p", "version": "1", "sha256": "x", "more": 1}'):
        with pytest.raises(ValueError):
            ModelChanged.parse(raw)


def test_unreachable_broker_is_broker_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnavailable):
        ModelRegistry.connect(url, timeout_s=0.5)
    reg = ModelRegistry(redis.Redis.from_url(url, socket_connect_timeout=0.5))
    for call in (lambda: reg.current("parts"), lambda: reg.list(), lambda: reg.versions("p"),
                 lambda: reg.fetch("parts", "1"), lambda: reg.rollback("parts"),
                 lambda: reg.push("parts", tiny_model(0.1))):
        with pytest.raises(BrokerUnavailable, match="broker unreachable"):
            call()
    assert issubclass(BrokerUnavailable, ConnectionError)
