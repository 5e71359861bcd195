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
    pool = _CountingPool.from_url(
        url,
        command_packer=_ZeroCopyPacker(),
        socket_keepalive=True,
        socket_connect_timeout=kwargs.pop("socket_connect_timeout", 2.0),
        health_check_interval=kwargs.pop("health_check_interval", 0),
        **kwargs,
    )
    client = redis.Redis(connection_pool=pool)
    # the client owns its pool: dropping the client closes its sockets (redis-py's pools are
    # in reference cycles, so left to the garbage collector they close in no set order)
    client.auto_close_connection_pool = True
    return client


class _CountingPool(redis.ConnectionPool):
    """A connection pool that counts its (re)connections (a subclass, not a patched method:
    no reference cycle, so a dropped client's sockets are closed at once, not by the
    garbage collector)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._procgraph_connections = _Connections()

    def make_connection(self) -> Any:
        """A new connection whose connects are counted."""
        connection = super().make_connection()
        connection.register_connect_callback(  # type: ignore[no-untyped-call]
            self._procgraph_connections.made)
        return connection


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
