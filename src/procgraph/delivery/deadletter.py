"""Dead letters: an entry that cannot be handled is moved aside, never dropped silently.

Guarantee: an entry that does not decode (whatever the exception), whose handler failed
``max_deliveries`` times, or that crashed or hung its process that often (see
:mod:`procgraph.delivery.recovery`) is appended to ``<stream>:dead`` with ``dead:reason``,
``dead:agent``, ``dead:source_id`` and ``dead:stream``, and acknowledged in the same server
step (one Lua script), so the line goes on with the next entry. The same step counts it in
``<stream>:edges``: ``<group>:done`` (as every counted ack) and ``<group>:dead``, the exact
number of entries that group dead-lettered, which trimming the dead stream does not change
(:mod:`procgraph.audit` reads it). An entry no longer pending (acknowledged meanwhile, e.g.
by a sibling that claimed it, or by a retry whose reply was lost) is neither recorded nor
counted again.

Bounds, so that hostile entries cannot fill the broker or a log:

- ``dead:reason`` is one line of at most :data:`REASON_LIMIT` characters (controls escaped,
  the size of what was cut said, see :func:`procgraph.safetext.printable`);
- the record keeps the original fields only when they total at most
  :data:`DEAD_RECORD_MAX_BYTES` (and :data:`DEAD_RECORD_MAX_FIELDS` fields); otherwise it
  keeps the first :data:`DEAD_HEADER_PREFIX` bytes of ``h`` and says ``dead:cut=<bytes of
  the original fields>``;
- the stream keeps at most :data:`DEAD_LETTER_MAXLEN` entries and about
  :data:`DEAD_STREAM_MAX_BYTES` bytes: a Lua script adds the record, keeps the byte total in
  ``<stream>:dead:bytes`` and deletes the oldest records while over either cap (the newest
  is always kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from procgraph.constants import HEADER_FIELD, dead_letter_key
from procgraph.edges import edges_key
from procgraph.safetext import printable

if TYPE_CHECKING:
    from procgraph.transport.reader import Entry, GroupReader

#: the dead-letter stream of each input stream keeps at most this many entries
DEAD_LETTER_MAXLEN = 10_000
#: ... and about this many bytes (field names and values of its records)
DEAD_STREAM_MAX_BYTES = 64 * 1024 * 1024
#: a record keeps the original fields when they total at most this many bytes
DEAD_RECORD_MAX_BYTES = 8 * 1024 * 1024
#: ... and are at most this many fields
DEAD_RECORD_MAX_FIELDS = 64
#: what a cut record keeps of the header field ``h``
DEAD_HEADER_PREFIX = 4096
#: the most characters of ``dead:reason``
REASON_LIMIT = 300

# KEYS: dead stream, its byte total, the stream, its edges hash. ARGV: max bytes, max
# entries, record bytes, group, entry id, fields... The entry is acknowledged and counted
# (<group>:done, <group>:dead) in the same step; one no longer pending is left alone.
_ADD_CAPPED = """
local dead, total_key = KEYS[1], KEYS[2]
local max_bytes, max_len = tonumber(ARGV[1]), tonumber(ARGV[2])
local group = ARGV[4]
if redis.call('XACK', KEYS[3], group, ARGV[5]) == 0 then return false end
redis.call('HINCRBY', KEYS[4], group .. ':done', 1)
redis.call('HINCRBY', KEYS[4], group .. ':dead', 1)
local function size_of(fields)
  local n = 0
  for i = 1, #fields do n = n + #fields[i] end
  return n
end
if redis.call('EXISTS', total_key) == 0 then
  local total, cursor = 0, '-'
  while true do
    local got = redis.call('XRANGE', dead, cursor, '+', 'COUNT', 100)
    for i = 1, #got do total = total + size_of(got[i][2]) end
    if #got < 100 then break end
    cursor = '(' .. got[#got][1]
  end
  redis.call('SET', total_key, total)
end
local id = redis.call('XADD', dead, '*', unpack(ARGV, 6))
local total = redis.call('INCRBY', total_key, tonumber(ARGV[3]))
local count = redis.call('XLEN', dead)
while total > max_bytes or count > max_len do
  local oldest = redis.call('XRANGE', dead, '-', '+', 'COUNT', 1)
  if #oldest == 0 or oldest[1][1] == id then break end
  redis.call('XDEL', dead, oldest[1][1])
  total = redis.call('DECRBY', total_key, size_of(oldest[1][2]))
  count = count - 1
end
if count <= 1 then redis.call('SET', total_key, tonumber(ARGV[3])) end
return id
"""


def dead_record(fields: Mapping[bytes, bytes], reason: str, agent: str, source_id: bytes,
                stream: str) -> dict[bytes, bytes]:
    """The capped record of an entry for ``<stream>:dead`` (see the module's bounds)."""
    size = sum(len(k) + len(v) for k, v in fields.items())
    if size <= DEAD_RECORD_MAX_BYTES and len(fields) <= DEAD_RECORD_MAX_FIELDS:
        record = {bytes(k): bytes(v) for k, v in fields.items()}
    else:
        record = {}
        header = fields.get(HEADER_FIELD)
        if header is not None:
            record[HEADER_FIELD] = bytes(header[:DEAD_HEADER_PREFIX])
        record[b"dead:cut"] = str(size).encode()
    record[b"dead:reason"] = printable(reason, REASON_LIMIT).encode()
    record[b"dead:agent"] = printable(agent).encode()
    record[b"dead:source_id"] = bytes(source_id)
    record[b"dead:stream"] = stream.encode()
    return record


def dead_letter(reader: GroupReader, stream: str, entry: Entry, reason: str,
                agent: str) -> None:
    """Move an entry to ``<stream>:dead`` with the reason (capped), then acknowledge it."""
    entry_id, fields = entry
    record = dead_record(fields, reason, agent, entry_id, stream)
    flat = [part for pair in record.items() for part in pair]
    size = sum(len(p) for p in flat)
    group = reader.specs[stream].group
    dead = dead_letter_key(stream)

    def move() -> None:
        reader.client.eval(_ADD_CAPPED, 4, dead, f"{dead}:bytes", stream,  # type: ignore[arg-type]
                           edges_key(stream), DEAD_STREAM_MAX_BYTES, DEAD_LETTER_MAXLEN, size,
                           group, entry_id, *flat)

    reader.call(move, "dead-letter")
