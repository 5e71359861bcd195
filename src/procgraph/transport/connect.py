"""Broker connections: a redis-py client with the zero-copy packer and TCP keepalive.

Each client counts the (re)connections of its pool (:func:`connections_made`): redis-py
retries a command on a new connection by itself when one breaks, and a reader needs to know
that a reply may have been lost on the way (procgraph.transport.reader).
"""

from __future__ import annotations

from typing import Any

import redis

from procgraph.transport.packer import _ZeroCopyPacker


def connect(url: str, **kwargs: Any) -> redis.Redis:
    """A redis-py client for ``url`` with the zero-copy packer and keepalive."""
    pool = redis.ConnectionPool.from_url(
        url,
        command_packer=_ZeroCopyPacker(),
        socket_keepalive=True,
        socket_connect_timeout=kwargs.pop("socket_connect_timeout", 2.0),
        health_check_interval=kwargs.pop("health_check_interval", 0),
        **kwargs,
    )
    counter = _Connections()
    make = pool.make_connection

    def make_counted() -> Any:
        connection = make()
        connection.register_connect_callback(counter.made)  # type: ignore[no-untyped-call]
        return connection

    pool.make_connection = make_counted  # type: ignore[method-assign]
    pool._procgraph_connections = counter  # type: ignore[attr-defined]
    return redis.Redis(connection_pool=pool)


class _Connections:
    """How many times a pool's connections were (re)established."""

    def __init__(self) -> None:
        self.count = 0

    def made(self, connection: Any) -> None:
        """redis-py's connect callback (a method: it is kept as a weak reference)."""
        self.count += 1


def connections_made(client: redis.Redis) -> int:
    """How many times ``client``'s connections were (re)established so far (0 for a client
    not made by :func:`connect`)."""
    counter = getattr(client.connection_pool, "_procgraph_connections", None)
    return counter.count if isinstance(counter, _Connections) else 0
