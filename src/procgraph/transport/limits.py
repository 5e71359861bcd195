"""What a broker accepts: the largest bulk string (and so the largest stream field)."""

from __future__ import annotations

import redis

#: Redis' and Valkey's default ``proto-max-bulk-len`` (512 MiB)
DEFAULT_MAX_BULK = 512 * 1024 * 1024
_cache: dict[int, int] = {}


def max_bulk_bytes(client: redis.Redis) -> int:
    """The broker's ``proto-max-bulk-len`` (asked once per client; the default if it
    will not say, e.g. CONFIG is renamed or forbidden by an ACL)."""
    key = id(client.connection_pool)
    if key not in _cache:
        try:
            got = client.config_get("proto-max-bulk-len")
            _cache[key] = int(got.get("proto-max-bulk-len") or DEFAULT_MAX_BULK)
        except redis.ResponseError:
            _cache[key] = DEFAULT_MAX_BULK
    return _cache[key]
