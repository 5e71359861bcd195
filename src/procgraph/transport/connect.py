"""Broker connections: a redis-py client with the zero-copy packer and TCP keepalive."""

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
    return redis.Redis(connection_pool=pool)
