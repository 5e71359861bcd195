"""The per-message commands' own connection (procgraph.transport.link), on a real broker."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import redis

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.errors import BrokerRefused
from procgraph.transport import retry
from procgraph.transport.connect import connect
from procgraph.transport.link import Link


def test_replies_come_raw_and_in_order(valkey: Any) -> None:
    link = Link(connect(valkey.url))
    try:
        first, second, length = link.execute([("XADD", "l:s", "*", "n", "1"),
                                               ("XADD", "l:s", "*", "n", "2"),
                                               ("XLEN", "l:s")])
        assert isinstance(first, bytes) and isinstance(second, bytes) and first < second
        assert length == 2
        assert link.connects == 1 and link.reconnects == 0
    finally:
        link.close()


def test_a_refused_command_raises_after_every_reply_is_read(valkey: Any) -> None:
    """As a redis-py pipeline: the others run, the first refusal is raised, and the
    connection is left in step (the next command gets its own reply, not a stale one)."""
    client = redis.Redis.from_url(valkey.url)
    client.set("l:string", "x")
    link = Link(connect(valkey.url))
    try:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            link.execute([("XADD", "l:s", "*", "n", "1"), ("XADD", "l:string", "*", "n", "2"),
                          ("XADD", "l:s", "*", "n", "3")])
        assert client.xlen("l:s") == 2
        assert link.execute([("PING",)]) == [b"PONG"]
        assert link.reconnects == 0
    finally:
        link.close()


def test_a_connection_the_broker_closed_is_made_again_at_once(valkey: Any) -> None:
    """An idle connection closed by the broker (CLIENT KILL, a timeout) costs no wait and
    no error: the command goes again at once on a new one, which is counted."""
    admin = redis.Redis.from_url(valkey.url)
    link = Link(connect(valkey.url))
    try:
        link.execute([("CLIENT", "SETNAME", "link-under-test")])
        killed = admin.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        assert link.execute([("XADD", "l:s", "*", "n", "1")])[0]
        assert admin.xlen("l:s") == 1
        assert link.connects == 2 and link.reconnects == 1
    finally:
        link.close()


def test_a_broker_that_is_gone_raises_a_transient_error_then_recovers() -> None:
    broker = EmbeddedBroker()
    broker.start()
    port = broker.port
    link = Link(connect(broker.url))
    try:
        assert link.execute([("PING",)]) == [b"PONG"]
        broker.close()
        with pytest.raises(redis.ConnectionError):
            link.execute([("PING",)])
        broker = EmbeddedBroker(port=port)
        broker.start()
        assert retry(lambda: link.execute([("PING",)]), "ping") == [b"PONG"]
        assert link.reconnects >= 1
    finally:
        link.close()
        broker.close()


def test_a_wrong_password_is_refused_not_retried() -> None:
    with EmbeddedBroker(password="link-right-password") as locked:
        link = Link(connect(f"redis://:link-wrong-password@127.0.0.1:{locked.port}"))
        with pytest.raises(BrokerRefused, match="wrong password") as caught:
            retry(lambda: link.execute([("PING",)]), "ping")
        assert "link-wrong-password" not in str(caught.value)
        right = Link(connect(f"redis://:link-right-password@127.0.0.1:{locked.port}"))
        assert right.execute([("PING",)]) == [b"PONG"]
        right.close()
        link.close()


def test_a_dropped_link_closes_its_socket_at_once(valkey: Any) -> None:
    """redis-py's connection sits in reference cycles: without the link's finalizer its
    socket would stay open until the garbage collector ran, then be closed in no set order
    (a ResourceWarning)."""
    admin = redis.Redis.from_url(valkey.url)
    link = Link(connect(valkey.url))
    link.execute([("CLIENT", "SETNAME", "link-dropped")])
    assert "link-dropped" in [c["name"] for c in admin.client_list()]
    gc.disable()
    try:
        del link
        wait_for(lambda: "link-dropped" not in [c["name"] for c in admin.client_list()], 2,
                 "the broker sees the dropped link's connection closed, with no collection")
    finally:
        gc.enable()
