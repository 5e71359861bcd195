"""The loss audit: every entry of every edge of a line, accounted for from the broker alone.

For one edge (an input's stream and the reading agent's consumer group), from one atomic
snapshot of the broker (a Lua script, so a running line's numbers agree with each other):

``produced = acked + dead + pending + unread + dropped + unexplained``

- ``produced``: entries added to the stream since the group was created: ``entries-added``
  minus ``<group>:base`` (recorded with the group, :func:`procgraph.edges.create_group_counted`);
- ``acked``: entries the agent handled and acknowledged: the runtime's ack count
  ``<group>:done`` (:func:`procgraph.edges.xack_counted`, which also counts the ack of each
  dead letter) minus ``dead``;
- ``dead``: entries moved to ``<stream>:dead`` by this agent: the ``<group>:dead`` count in
  ``<stream>:edges``, kept by the broker in the step that adds each dead letter
  (:mod:`procgraph.delivery.deadletter`), so it is exact however many agents read the
  stream and however many records the capped dead stream trimmed (``dead_trimmed``: records
  it lost, any agent's). A line from before that counter counts its records in the dead
  stream instead; trimmed ones are then counted in ``dead`` when the agent is the stream's
  only reader, else they stay in ``acked`` and the row says so;
- ``pending``: delivered, not acknowledged yet; ``unread``: still in the stream, not delivered;
- ``dropped`` (``latest`` edges only): trimmed away before the agent read them;
- ``unexplained``: what is left. On a ``lossless`` edge anything but 0 is a loss (or a count
  gone wrong) and fails the audit, naming the entry ids the broker can still show: the last
  entry deleted from the stream (``max-deleted-entry-id``; trimming never sets it) and
  pending entries no longer in the stream. An entry acknowledged outside procgraph (XACK
  without the count) leaves no id behind; the row says so.

A broker that lost its data (``broker_data_lost`` in its line counters, counted by
:mod:`procgraph.durability`) lost its streams and these counts with them: the audit counts
from the loss on and shows how many losses there were, per edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from pydantic import BaseModel, Field

from procgraph.constants import dead_letter_key
from procgraph.durability import DATA_LOST_COUNTER
from procgraph.edges import edges_key, reads_as_position
from procgraph.errors import broker_unavailable_as
from procgraph.graph import GraphPlan
from procgraph.health import read_line_counters
from procgraph.safetext import printable

# KEYS: stream, its edges hash, its dead stream. ARGV: '1' when lag counts positions (Valkey).
# Returns false (no stream) or {added, length, max-deleted, groups, counters, dead_added,
# dead_len, dead_by_consumer}; groups: {name, pending, last-delivered-id, unread} each.
_SNAPSHOT = """
local function kv(t)
  local m = {}
  for i = 1, #t, 2 do m[t[i]] = t[i + 1] end
  return m
end
local function id(s)
  local ms, seq = string.match(s, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function after(a, b)
  local am, as = id(a)
  local bm, bs = id(b)
  return am > bm or (am == bm and as > bs)
end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'stream' then return false end
local info = kv(redis.call('XINFO', 'STREAM', KEYS[1]))
local length = info['length']
local first, last = info['first-entry'], info['last-entry']
local groups = {}
for _, raw in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local g = kv(raw)
  local delivered = g['last-delivered-id']
  local unread = 0
  if length == 0 or (last and not after(last[1], delivered)) then
    unread = 0
  elseif first and after(first[1], delivered) then
    unread = length
  elseif ARGV[1] == '1' and g['lag'] then
    unread = g['lag']
  else
    local cursor = '(' .. delivered
    while true do
      local got = redis.call('XRANGE', KEYS[1], cursor, '+', 'COUNT', 200)
      unread = unread + #got
      if #got < 200 then break end
      cursor = '(' .. got[#got][1]
    end
  end
  groups[#groups + 1] = {g['name'], g['pending'], delivered, unread}
end
local dead_added, dead_len, by = 0, 0, {}
if redis.call('TYPE', KEYS[3])['ok'] == 'stream' then
  local d = kv(redis.call('XINFO', 'STREAM', KEYS[3]))
  dead_added, dead_len = d['entries-added'], d['length']
  local counts, cursor = {}, '-'
  while true do
    local got = redis.call('XRANGE', KEYS[3], cursor, '+', 'COUNT', 100)
    for i = 1, #got do
      local f = kv(got[i][2])
      if f['dead:stream'] == nil or f['dead:stream'] == KEYS[1] then
        local who = f['dead:agent'] or ''
        counts[who] = (counts[who] or 0) + 1
      end
    end
    if #got < 100 then break end
    cursor = '(' .. got[#got][1]
  end
  for who, n in pairs(counts) do by[#by + 1] = who; by[#by + 1] = n end
end
return {info['entries-added'], length, info['max-deleted-entry-id'] or '0-0', groups,
        redis.call('HGETALL', KEYS[2]), dead_added, dead_len, by}
"""
_PENDING_SCAN = 1000  # pending entries checked for having been deleted from the stream


class EdgeAudit(BaseModel):
    """The accounting of one edge; ``ok`` False means entries went missing on a lossless edge."""

    stream: str
    group: str = Field(description="the reading agent (its consumer group)")
    broker: str
    policy: str = Field(description="lossless or latest")
    exists: bool = Field(True, description="the stream and the group exist on the broker")
    produced: int = 0
    acked: int = 0
    dead: int = 0
    dead_trimmed: int = Field(0, description="records the dead-letter stream trimmed (any agent)")
    pending: int = 0
    unread: int = 0
    dropped: int = 0
    unexplained: int = 0
    broker_data_lost: int = Field(0, description="times the edge's broker lost its data")
    entry_ids: list[str] = Field(default_factory=list, description="ids of unexplained entries")
    gone: str | None = Field(None, description="'stream' or 'group': deleted, counters left")
    notes: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing unexplained (a latest edge's drops are explained), nothing deleted."""
        return self.unexplained == 0 and self.gone is None


class LineAudit(BaseModel):
    """Every edge of a line, audited."""

    graph: str
    edges: list[EdgeAudit]

    @property
    def ok(self) -> bool:
        """Every edge is accounted for."""
        return all(e.ok for e in self.edges)


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _group_of(consumer: str) -> str:
    """The agent (consumer group) of a consumer name ``<agent>-<replica>``."""
    agent, _, replica = consumer.rpartition("-")
    return agent if agent and replica.isdigit() else consumer


def _ghost_pending(client: redis.Redis, stream: str, group: str) -> list[str]:
    """Pending entries of ``group`` that are no longer in the stream (deleted while pending)."""
    rows = client.xpending_range(stream, group, min="-", max="+", count=_PENDING_SCAN)
    ids = [_text(r["message_id"]) for r in rows]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for entry_id in ids:
        pipe.xrange(stream, entry_id, entry_id)
    gone = [i for i, got in zip(ids, pipe.execute(), strict=True) if not got]
    if not gone:
        return []
    # still pending now (an entry acked and trimmed meanwhile is no ghost)
    still = client.xpending_range(stream, group, min="-", max="+", count=_PENDING_SCAN)
    now = {_text(r["message_id"]) for r in still}
    return [i for i in gone if i in now]


def audit_edge(client: redis.Redis, stream: str, group: str, policy: str, broker: str = "",
               lost: int = 0) -> EdgeAudit:
    """Account for every entry of one edge (see the module); raises BrokerUnavailable."""
    row = EdgeAudit(stream=stream, group=group, broker=broker, policy=policy,
                    broker_data_lost=lost)
    position = reads_as_position(client)
    with broker_unavailable_as(f"audit {stream}"):
        snap = client.eval(_SNAPSHOT, 3, stream, edges_key(stream),  # type: ignore[arg-type]
                           dead_letter_key(stream), "1" if position else "0")
        if not snap:
            row.exists = False
            if client.hexists(edges_key(stream), f"{group}:base"):
                row.gone = "stream"
                row.notes.append(f"the stream was deleted (its counters in {edges_key(stream)} "
                                 "remain): its entries cannot be accounted for")
            else:
                row.notes.append("no stream yet: nothing produced")
            return row
        added, _length, max_deleted, groups, counters_raw, dead_added, dead_len, by = snap
        counters = {k: int(v) for k, v in _pairs(counters_raw).items()}
        found = {_text(g[0]): g for g in groups}
        if group not in found and f"{group}:base" in counters:
            row.exists = False
            row.gone = "group"
            row.notes.append("the consumer group was deleted (its counters remain): entries "
                             "it had not acknowledged cannot be accounted for")
            return row
        if group not in found:
            row.exists = False
            row.notes.append("no consumer group yet: the agent never started reading")
            return row
        _, pending, _delivered, unread = found[group]
        base = counters.get(f"{group}:base")
        done = counters.get(f"{group}:done", 0)
        row.pending, row.unread = int(pending), int(unread)
        if base is None:
            row.notes.append("group made outside procgraph (no base count): produced counts "
                             "the whole stream's history")
            base = 0
        row.produced = int(added) - base
        dead_by: dict[str, int] = {}
        for consumer, n in _pairs(by).items():
            dead_by[_group_of(consumer)] = dead_by.get(_group_of(consumer), 0) + int(n)
        row.dead = dead_by.get(group, 0)
        row.dead_trimmed = int(dead_added) - int(dead_len)
        if f"{group}:dead" in counters:  # counted with each dead letter: exact, trims or not
            row.dead = counters[f"{group}:dead"]
            if row.dead_trimmed:
                row.notes.append(f"{row.dead_trimmed} dead letters trimmed from "
                                 f"{dead_letter_key(stream)} (its cap); dead is the exact "
                                 f"count kept in {edges_key(stream)}")
        elif row.dead_trimmed:
            if len(found) == 1:
                row.dead += row.dead_trimmed
                row.notes.append(f"{row.dead_trimmed} dead letters trimmed from "
                                 f"{dead_letter_key(stream)} (its cap), counted in dead")
            else:
                row.notes.append(f"{row.dead_trimmed} dead letters trimmed from "
                                 f"{dead_letter_key(stream)} (its cap) belong to one of "
                                 f"{len(found)} readers: counted in acked")
        row.acked = done - row.dead
        rest = row.produced - done - row.pending - row.unread
        if policy == "latest" and rest > 0:
            row.dropped = rest
        else:
            row.unexplained = rest
        if row.unexplained or _text(max_deleted) != "0-0":
            _name_entries(client, row, _text(max_deleted))
    if lost:
        row.notes.append(f"broker {broker!r} lost its data {lost} time(s): entries before "
                         "the last loss went with it and are not counted here")
    return row


def _name_entries(client: redis.Redis, row: EdgeAudit, max_deleted: str) -> None:
    """Add the ids the broker can still show for an edge's unexplained entries."""
    if max_deleted != "0-0":
        row.entry_ids.append(max_deleted)
        row.notes.append(f"entry {max_deleted} was deleted from the stream (XDEL; the last "
                         "one deleted: earlier deletions leave no id)")
    ghosts = _ghost_pending(client, row.stream, row.group) if max_deleted != "0-0" else []
    if ghosts and row.policy != "latest":  # a lossless entry deleted while in hand: lost
        row.pending -= len(ghosts)
        row.unexplained += len(ghosts)
    if ghosts:
        row.entry_ids += [g for g in ghosts if g not in row.entry_ids]
        row.notes.append(f"{len(ghosts)} pending entries are no longer in the stream: "
                         + ", ".join(ghosts[:10]))
    if row.unexplained > 0 and not row.entry_ids:
        row.notes.append("no id left: an entry acknowledged outside procgraph (XACK without "
                         "the runtime's count) or deleted before a later XDEL leaves none")
    if row.unexplained < 0:
        row.notes.append(f"{-row.unexplained} more entries accounted than produced: acks "
                         f"counted twice, or {edges_key(row.stream)} edited by hand")


def audit_line(plan: GraphPlan, urls: Mapping[str, str]) -> LineAudit:
    """Audit every edge of ``plan`` (``urls``: broker name -> URL); raises BrokerUnavailable."""
    clients: dict[str, redis.Redis] = {}
    edges: list[EdgeAudit] = []
    lost: dict[str, int] = {}
    try:
        for agent in plan.agents.values():
            for inp in agent.inputs:
                if inp.broker not in clients:
                    clients[inp.broker] = redis.Redis.from_url(
                        urls[inp.broker], socket_connect_timeout=2, socket_timeout=10)
                    counters = read_line_counters(clients[inp.broker], plan.name)
                    lost[inp.broker] = counters.get(DATA_LOST_COUNTER, 0)
                edges.append(audit_edge(clients[inp.broker], inp.stream, agent.name,
                                        inp.policy, inp.broker, lost[inp.broker]))
    finally:
        for client in clients.values():
            client.close()
    for e in edges:
        e.notes = [printable(n, 500) for n in e.notes]
    return LineAudit(graph=plan.name, edges=edges)
