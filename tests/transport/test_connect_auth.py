"""A wrong password is not an outage (issue 9 item 15): refused at once, never retried."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from procgraph.brokers import EmbeddedBroker
from procgraph.errors import BrokerRefused, BrokerUnavailable, broker_unavailable_as, refusal
from procgraph.transport import retry

PASSWORD = "item15-right-password"


@pytest.fixture(scope="module")
def locked() -> Iterator[EmbeddedBroker]:
    """A loopback Valkey that requires PASSWORD."""
    with EmbeddedBroker(password=PASSWORD) as broker:
        yield broker


@pytest.mark.parametrize("userinfo, reason", [
    (":wrong-password@", "wrong password or user"),
    ("nobody:wrong-password@", "wrong password or user"),
    ("", "no password given and the broker requires one"),
])
def test_item15_wrong_password_is_refused_not_retried(locked: EmbeddedBroker, userinfo: str,
                                                      reason: str) -> None:
    """Issue 9 item 15: AuthenticationError / NOAUTH are not transient: retry() raises
    BrokerRefused at once (it retried forever), naming the reason and the fix."""
    client = redis.Redis.from_url(f"redis://{userinfo}127.0.0.1:{locked.port}")
    started = time.monotonic()
    with pytest.raises(BrokerRefused, match=reason) as caught:
        retry(client.ping, "ping")
    assert time.monotonic() - started < 2
    assert "fix:" in str(caught.value) and "wrong-password" not in str(caught.value)
    with pytest.raises(BrokerRefused), broker_unavailable_as(
            f"ping redis://{userinfo}127.0.0.1:{locked.port}"):
        client.ping()
    client.close()


def test_item15_refusal_keeps_outages_transient(locked: EmbeddedBroker) -> None:
    """A broker that is away stays BrokerUnavailable (retried); the right password works."""
    from procgraph.brokers import free_port

    down = redis.Redis.from_url(f"redis://:x@127.0.0.1:{free_port()}", socket_connect_timeout=0.5)
    with pytest.raises(BrokerUnavailable) as caught, broker_unavailable_as("ping"):
        down.ping()
    assert refusal(caught.value) is None
    assert redis.Redis.from_url(locked.url).ping()
