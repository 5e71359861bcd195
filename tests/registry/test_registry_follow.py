"""ModelRegistry.follow on real brokers: pushes, rollbacks, failing versions, outages, noise."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
import redis
from registry_models import tiny_model

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker, free_port, server_binary
from procgraph.constants import model_channel
from procgraph.errors import BrokerError
from procgraph.registry import ModelFollower, ModelRecord, ModelRegistry


class Calls:
    """Records on_change calls (from the follower's thread); can refuse some versions."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.refuse = refuse
        self.seen: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, rec: ModelRecord, data: bytes) -> None:
        with self.lock:
            self.seen.append((rec.version, data))
        if rec.version in self.refuse:
            raise ValueError(f"version {rec.version} is no good")

    @property
    def versions(self) -> list[str]:
        with self.lock:
            return [v for v, _ in self.seen]


@pytest.fixture()
def registry(broker: EmbeddedBroker) -> Iterator[ModelRegistry]:
    """A registry on the (emptied) broker of this test."""
    reg = ModelRegistry(redis.Redis.from_url(broker.url))
    yield reg
    reg.close()


def subscribed(reg: ModelRegistry, name: str) -> bool:
    """Whether a follower listens on the channel of ``name`` (so events, not polls, wake it)."""
    counts = dict(reg.client.pubsub_numsub(model_channel(name)))
    return int(counts.get(model_channel(name).encode(), 0)) > 0


def stop(follower: ModelFollower) -> None:
    """Stop a follower and check that its thread ends."""
    follower.stop()
    follower.join(5)
    assert not follower.is_alive()


def test_follow_sees_a_push_and_a_rollback(registry: ModelRegistry) -> None:
    v1, v2 = tiny_model(0.1), tiny_model(0.9)
    registry.push("parts", v1)
    calls = Calls()
    # a long poll: only the registry's event can deliver within the waits below
    follower = registry.follow("parts", calls, poll_s=30.0, known_version="1")
    try:
        wait_for(lambda: subscribed(registry, "parts"), 5, "the follower to subscribe")
        assert calls.versions == []  # known_version is never delivered first
        registry.push("parts", v2)
        wait_for(lambda: calls.versions == ["2"], 5, "the push to be delivered")
        registry.rollback("parts")
        wait_for(lambda: calls.versions == ["2", "1"], 5, "the rollback to be delivered")
        assert [d for _, d in calls.seen] == [v2, v1]
        assert follower.version == "1"
    finally:
        stop(follower)


def test_follow_without_known_version_delivers_the_current_one(registry: ModelRegistry) -> None:
    registry.push("parts", tiny_model(0.1))
    calls = Calls()
    follower = registry.follow("parts", calls, poll_s=0.1)
    try:
        wait_for(lambda: calls.versions == ["1"], 5, "the current version")
    finally:
        stop(follower)
    assert calls.versions == ["1"]


def test_follow_skips_a_version_whose_on_change_raised(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    registry.push("parts", tiny_model(0.1))
    calls = Calls(refuse=frozenset({"2"}))
    follower = registry.follow("parts", calls, poll_s=0.05, known_version="1")
    try:
        with caplog.at_level(logging.ERROR, logger="procgraph.registry"):
            registry.push("parts", tiny_model(0.2))
            wait_for(lambda: "2" in calls.versions, 5, "version 2 to be offered")
            wait_for(lambda: any("v2 was not taken" in r.getMessage() for r in caplog.records),
                     5, "the failure to be logged")
        for _ in range(10):  # many polls later it is still not retried
            threading.Event().wait(0.05)
        assert calls.versions == ["2"]
        registry.push("parts", tiny_model(0.3))
        wait_for(lambda: calls.versions == ["2", "3"], 5, "version 3")
        registry.rollback("parts")  # current is 2 again: refused once, never offered again
        threading.Event().wait(0.5)
        assert calls.versions == ["2", "3"]
        assert follower.version == "3" and follower.is_alive()
    finally:
        stop(follower)


def test_follow_ignores_a_malformed_event(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    registry.push("parts", tiny_model(0.1))
    calls = Calls()
    follower = registry.follow("parts", calls, poll_s=30.0, known_version="1")
    channel = model_channel("parts")
    try:
        wait_for(lambda: subscribed(registry, "parts"), 5, "the follower to subscribe")
        with caplog.at_level(logging.WARNING, logger="procgraph.registry"):
            for junk in (b"garbage", b"\xff", b'{"event": "push"}',
                         b'{"event": "push", "name": "other", "version": "9", "sha256": "x"}'):
                registry.client.publish(channel, junk)
            wait_for(lambda: sum("ignoring" in r.getMessage() for r in caplog.records) >= 4, 5,
                     "the junk events to be logged")
        assert follower.is_alive() and calls.versions == []
        registry.push("parts", tiny_model(0.2))
        wait_for(lambda: calls.versions == ["2"], 5, "the real event after the junk")
    finally:
        stop(follower)


def _have(kind: str) -> bool:
    try:
        server_binary(kind)
    except BrokerError:
        return False
    return True


@pytest.mark.parametrize("kind", ["valkey", "redis"])
def test_follow_survives_a_broker_restart(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    if not _have(kind):
        pytest.skip(f"no {kind} server installed")
    server = EmbeddedBroker(port=free_port(), kind=kind)
    server.start()
    reg = ModelRegistry(redis.Redis.from_url(server.url, socket_connect_timeout=0.5))
    calls = Calls()
    follower: ModelFollower | None = None
    try:
        reg.push("parts", tiny_model(0.1))
        follower = reg.follow("parts", calls, poll_s=0.1)
        wait_for(lambda: calls.versions == ["1"], 5, "the first version")
        with caplog.at_level(logging.WARNING, logger="procgraph.registry"):
            server.kill()
            wait_for(lambda: any("unreachable" in r.getMessage() for r in caplog.records), 5,
                     "the outage to be logged")
        server.start()  # the same port, empty: no persistence
        after = tiny_model(0.4)
        reg.push("parts", tiny_model(0.3))  # version "1" again, other bytes: a change
        reg.push("parts", after)
        wait_for(lambda: calls.versions[-1:] == ["2"], 15, "a version pushed after the restart")
        assert calls.seen[-1][1] == after and follower.is_alive()
        registry_event = reg.rollback("parts")  # the subscription was renewed: events again
        wait_for(lambda: calls.versions[-1:] == ["1"], 5, "the rollback after the restart")
        assert calls.seen[-1][1] != calls.seen[0][1] and registry_event.version == "1"
    finally:
        if follower is not None:
            stop(follower)
        reg.close()
        server.close()
