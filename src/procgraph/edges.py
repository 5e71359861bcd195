"""Per-edge delivery figures: what each consumer group got, has still to read, and lost.

An *edge* is one consumer group (the reading agent) on one stream (the writing port). For each
edge :func:`edge_stats` reports, from the broker alone:

- ``unread``: entries still in the stream after the group's last delivered entry;
- ``pending``: entries delivered but not yet acknowledged;
- ``read``: entries delivered to the group since it was created: the entries it acknowledged
  (counted by the runtime with each ack, :func:`xack_counted`, as ``<group>:done`` in the hash
  ``<stream>:edges``) plus those pending (or a ``<group>:read`` count kept by another reader
  through :func:`count_read`); None when nothing counts it;
- ``dropped``: entries added after the group was created that it never got and never will:
  trimmed away (``latest`` policy) before it read them. Exactly
  ``added - base - read - unread``, where ``added`` is the stream's ``entries-added`` and
  ``base`` the stream's ``entries-added`` when the group was created
  (:func:`create_group_counted` records it atomically with the group);
- ``dead``: entries the group moved to dead letters, ``<group>:dead`` (counted by
  :mod:`procgraph.delivery.deadletter` in the step that acknowledges them).

Why not ``entries-read`` and ``lag`` from ``XINFO GROUPS``: the servers disagree on what they
mean once trimmed entries are skipped. Valkey (8, 9) moves ``entries-read`` to the logical
position of the last delivered entry (skipped entries count as read; ``lag`` = unread), Redis
7.0 adds one per delivered entry (``lag`` = unread + skipped). Either way
``entries-added - entries-read - lag`` is always 0, so neither server says what a group
missed. :func:`edge_stats` probes which kind a broker is once (a throwaway stream) and
computes ``unread`` exactly on both; ``read`` and ``base`` come from the runtime.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import redis
from pydantic import BaseModel, Field

from procgraph.constants import probe_key
from procgraph.errors import BrokerRefused, broker_unavailable_as

#: suffix of the hash holding each group's ``<group>:read`` and ``<group>:base`` counters
EDGES_SUFFIX = ":edges"

# XGROUP CREATE plus the counters, atomically: nobody reads before ``base`` is set
_CREATE = """
local made = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
if type(made) == 'table' and made.err then return made end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local added, length = 0, 0
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then added = info[i + 1] end
  if info[i] == 'length' then length = info[i + 1] end
end
local base = added
if ARGV[2] ~= '$' then base = added - length end
redis.call('HSET', KEYS[2], ARGV[1] .. ':base', base, ARGV[1] .. ':read', 0)
return base
"""
# entries of a stream after an id (exclusive), counted on the server
_UNREAD = "return #redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')"

_position_kind: dict[str, bool] = {}


def edges_key(stream: str) -> str:
    """The hash of per-group delivery counters of ``stream``."""
    return stream + EDGES_SUFFIX


def create_group_counted(client: redis.Redis, stream: str, group: str, start: str = "$"
                         ) -> bool:
    """``XGROUP CREATE stream group start MKSTREAM`` and reset its counters, atomically.

    Returns False (and changes nothing) when the group exists already (BUSYGROUP). Any other
    server error is raised as redis-py raises it.
    """
    try:
        client.eval(_CREATE, 2, stream, edges_key(stream), group, start)
    except redis.ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


_XACK_COUNTED = """
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
if n > 0 then redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':done', n) end
return n
"""
_XACK_CHUNK = 1000  # ids per script call (Lua's unpack has a stack limit)


def xack_counted(pipe: Any, stream: str, group: str, ids: list[bytes]) -> int:
    """Queue XACKs of ``ids`` on a client or pipeline, counting the entries really acked.

    The count (``<group>:done`` in ``<stream>:edges``) moves in the same server step as the
    ack, so a reader killed at any moment never leaves an entry counted twice or not at all;
    returns how many commands were queued.
    """
    commands = xack_commands(stream, group, ids)
    for command in commands:
        pipe.execute_command(*command)
    return len(commands)


def xack_commands(stream: str, group: str, ids: list[bytes]) -> list[tuple[Any, ...]]:
    """The commands of :func:`xack_counted`, as argument tuples (for a
    :class:`procgraph.transport.link.Link`)."""
    return [("EVAL", _XACK_COUNTED, 2, stream, edges_key(stream), group,
             *ids[i:i + _XACK_CHUNK]) for i in range(0, len(ids), _XACK_CHUNK)]


def count_read(pipe: Any, stream: str, group: str, n: int) -> None:
    """Queue on a client or pipeline: ``n`` more entries were delivered to ``group``."""
    if n:
        pipe.hincrby(edges_key(stream), f"{group}:read", n)


class EdgeStats(BaseModel):
    """Delivery figures of one consumer group on one stream (None: the broker can't tell)."""

    stream: str
    group: str
    added: int = Field(0, description="entries ever added to the stream")
    unread: int | None = Field(None, description="entries in the stream not yet delivered")
    pending: int = Field(0, description="entries delivered, not yet acknowledged")
    read: int | None = Field(None, description="entries delivered since the group was made")
    dropped: int | None = Field(None, description="entries trimmed before the group got them")
    dead: int | None = Field(None, description=(
        "entries the group dead-lettered since it was made (exact: ``<group>:dead``, counted "
        "with each dead letter); None when nothing counts it"))

    @property
    def lag(self) -> int | None:
        """Entries the group has still to read (alias of ``unread``)."""
        return self.unread


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id(value: Any) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


def _server_key(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"{kw.get('host')}:{kw.get('port')}:{kw.get('path')}:{kw.get('db')}"


def reads_as_position(client: redis.Redis) -> bool:
    """Whether this broker's ``entries-read`` jumps over trimmed entries (Valkey) or not.

    Probed once per server with a throwaway stream of ~300 entries, then cached. A client
    whose ACL forbids writing the probe (a read-only viewer) goes by the server's name in
    HELLO instead (Valkey counts positions, Redis up to 8.0 does not).
    """
    key = _server_key(client)
    if key not in _position_kind:
        try:
            _position_kind[key] = _probe_position(client)
        except (BrokerRefused, redis.exceptions.NoPermissionError):
            with broker_unavailable_as("ask the broker's name"):
                hello = client.execute_command("HELLO")  # type: ignore[no-untyped-call]
            server = hello.get(b"server", hello.get("server")) if isinstance(hello, dict) else (
                dict(zip(hello[::2], hello[1::2], strict=False)).get(b"server"))
            _position_kind[key] = server in (b"valkey", "valkey")
    return _position_kind[key]


def _probe_position(client: redis.Redis) -> bool:
    """Whether ``entries-read`` jumped over 300 trimmed entries of a throwaway stream."""
    probe = probe_key(uuid.uuid4().hex)
    with broker_unavailable_as("probe stream counters"):
        try:
            client.xgroup_create(probe, "g", id="$", mkstream=True)
            client.xadd(probe, {"i": 0})
            client.xreadgroup("g", "c", {probe: ">"}, count=1)
            pipe = client.pipeline(transaction=False)
            for i in range(300):
                pipe.xadd(probe, {"i": i}, maxlen=1, approximate=True)
            pipe.execute()
            client.xreadgroup("g", "c", {probe: ">"}, count=1)
            info = client.xinfo_groups(probe)[0]
        finally:
            client.delete(probe)
    return int(info.get("entries-read") or 0) > 2


def _unread(client: redis.Redis, stream: str, info: dict[str, Any], group: dict[str, Any],
            position: bool) -> int | None:
    length = int(info.get("length") or 0)
    last = group.get("last-delivered-id") or b"0-0"
    lag = group.get("lag")
    if length == 0:
        return 0
    first_entry, last_entry = info.get("first-entry"), info.get("last-entry")
    if first_entry and _id(last) < _id(first_entry[0]):
        return length
    if last_entry and _id(last) >= _id(last_entry[0]):
        return 0
    if position and lag is not None:
        return int(lag)
    return int(client.eval(_UNREAD, 1, stream, _text(last)))  # type: ignore[arg-type]


def edge_stats(client: redis.Redis, streams: Iterable[str]
               ) -> dict[tuple[str, str], EdgeStats]:
    """Per ``(stream, group)`` on these streams: unread, pending, read and dropped entries.

    Raises BrokerUnavailable when the broker cannot be reached; a stream that does not exist
    (yet) is left out.
    """
    streams = list(streams)
    if not streams:
        return {}
    position = reads_as_position(client)
    with broker_unavailable_as("read stream and group info"):
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.xinfo_stream(stream)
            pipe.xinfo_groups(stream)
            pipe.hgetall(edges_key(stream))
        replies: list[Any] = pipe.execute(raise_on_error=False)
        out: dict[tuple[str, str], EdgeStats] = {}
        for i, stream in enumerate(streams):
            info, groups, counters = replies[3 * i: 3 * i + 3]
            if not isinstance(info, dict) or not isinstance(groups, list):
                continue
            counts = {_text(k): int(v) for k, v in counters.items()} \
                if isinstance(counters, dict) else {}
            for group in groups:
                name = _text(group.get("name"))
                out[(stream, name)] = _stats(client, stream, name, info, group, counts,
                                             position)
    return out


def _stats(client: redis.Redis, stream: str, name: str, info: dict[str, Any],
           group: dict[str, Any], counts: dict[str, int], position: bool) -> EdgeStats:
    added = int(info.get("entries-added") or 0)
    unread = _unread(client, stream, info, group, position)
    read, base = counts.get(f"{name}:read"), counts.get(f"{name}:base")
    pending = int(group.get("pending") or 0)
    if base is not None:  # the runtime counts acks: delivered = done + pending
        read = max(read or 0, counts.get(f"{name}:done", 0) + pending)
    dropped: int | None = None
    if unread is not None and read is not None and base is not None:
        dropped = max(0, added - base - read - unread)
    elif unread is not None and not position and group.get("lag") is not None:
        # Redis 7.0 without the runtime's counters: lag counts skipped entries too
        dropped = max(0, int(group["lag"]) - unread)
    return EdgeStats(stream=stream, group=name, added=added, unread=unread,
                     pending=pending, read=read, dropped=dropped,
                     dead=counts.get(f"{name}:dead", 0 if base is not None else None))
