"""Taking over a dead replica's messages, and never a live one's.

Guarantee: the entries a replica read and did not acknowledge are taken over by a live
replica of the same agent only when their owner is gone, and never by their owner itself:

- A replica never claims its own entries (in hand, in a batch, or read ahead).
- A consumer ``<agent>-<i>`` of the agent's group is judged by the heartbeat of replica ``i``
  (on the agent's broker): while it is refreshed (within :data:`STALE_PERIODS` heartbeat
  periods, measured with the key's TTL on the broker, so no clocks are compared) its entries
  are left alone however long its handler takes. Once it is stale or gone, a sibling takes
  over the consumer's entries idle for at least :data:`DEAD_IDLE_PERIODS` periods, re-reading
  the heartbeat right before the claim.
- A consumer whose heartbeat cannot be known (another naming, or the heartbeat broker is
  unreachable) loses entries idle for ``claim_idle_ms`` (the fallback).
- A live replica keeps its entries: :class:`EntryKeeper` resets their idle time every period
  (``XCLAIM ... JUSTID`` to itself, which counts no delivery), so the fallback never takes
  the entries of a long handler call, and a restarted replica's re-read resets them too.

``XCLAIM`` checks the idle time of each entry on the broker, so two claimers (or a claimer
and the restarted owner re-reading its pending entries) never both get the same entry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import RedisError

from procgraph.constants import DEFAULT_HEARTBEAT_S, HEARTBEAT_TTL_PERIODS
from procgraph.errors import BrokerUnavailable
from procgraph.health import heartbeat_ttls_ms

if TYPE_CHECKING:
    from procgraph.transport.reader import Entry, GroupReader

log = logging.getLogger("procgraph.runtime")
#: a heartbeat not refreshed for this many periods means its replica is gone
STALE_PERIODS = 3
#: a gone replica's entries are claimed once idle for this many periods
DEAD_IDLE_PERIODS = 2
#: entries claimed from one consumer per round trip
CLAIM_COUNT = 200
#: entries a keeper touches per stream and period (more than a replica ever holds)
KEEP_COUNT = 2000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Claimer:
    """Takes over the entries of the gone replicas of one agent, for one reader."""

    def __init__(self, reader: GroupReader, *, graph: str, agent: str,
                 heartbeats: redis.Redis | None, claim_idle_ms: int,
                 period_s: float = DEFAULT_HEARTBEAT_S) -> None:
        self.reader = reader
        self.graph = graph
        self.agent = agent
        self.heartbeats = heartbeats
        self.claim_idle_ms = claim_idle_ms
        period_ms = int(period_s * 1000)
        self.dead_idle_ms = DEAD_IDLE_PERIODS * period_ms
        #: a heartbeat key with at most this much TTL left was not refreshed lately
        self.stale_ttl_ms = (HEARTBEAT_TTL_PERIODS - STALE_PERIODS) * period_ms

    def replica_of(self, consumer: str) -> int | None:
        """The replica index of a consumer named ``<agent>-<i>``, else None."""
        prefix = f"{self.agent}-"
        rest = consumer[len(prefix):] if consumer.startswith(prefix) else ""
        return int(rest) if rest.isdigit() else None

    def alive(self, replicas: list[int]) -> dict[int, bool] | None:
        """Per replica: is its heartbeat fresh? None when heartbeats cannot be read."""
        if self.heartbeats is None:
            return None
        try:
            ttls = heartbeat_ttls_ms(self.heartbeats, self.graph, self.agent, replicas)
        except (BrokerUnavailable, RedisError):
            return None
        # -2: no key (gone); -1: no TTL (not ours to judge: alive)
        return {i: t == -1 or t > self.stale_ttl_ms for i, t in ttls.items()}

    def claim(self) -> list[tuple[str, Entry]]:
        """Take over the claimable entries of other consumers, on every stream read."""
        out: list[tuple[str, Entry]] = []
        for spec in self.reader.specs.values():
            out.extend((spec.stream, e) for e in self._claim_stream(spec.stream, spec.group))
        return out

    def _claim_stream(self, stream: str, group: str) -> list[Entry]:
        reader = self.reader
        summary = reader.call(lambda: reader.client.xpending(stream, group), "XPENDING")
        others = [_text(c["name"]) for c in summary.get("consumers") or []
                  if int(c.get("pending") or 0) > 0 and _text(c["name"]) != reader.consumer]
        if not others:
            return []
        known = {c: i for c in others if (i := self.replica_of(c)) is not None}
        alive = self.alive(sorted(set(known.values()))) if known else None
        got: list[Entry] = []
        for consumer in others:
            index = known.get(consumer)
            if index is None or alive is None:
                got.extend(self._take(stream, group, consumer, self.claim_idle_ms))
            elif not alive[index]:
                again = self.alive([index])  # right before the claim: restarted since?
                if again is None or not again[index]:
                    got.extend(self._take(stream, group, consumer, self.dead_idle_ms))
        return got

    def _take(self, stream: str, group: str, consumer: str, min_idle_ms: int) -> list[Entry]:
        """XCLAIM one consumer's entries idle at least ``min_idle_ms``."""
        reader = self.reader
        client = reader.client
        got: list[Entry] = []
        while True:
            rows = reader.call(lambda: client.xpending_range(
                stream, group, "-", "+", CLAIM_COUNT, consumername=consumer,
                idle=min_idle_ms), "XPENDING")
            ids = [r["message_id"] for r in rows]
            if not ids:
                return got
            claimed: list[Any] = reader.call(lambda ids=ids: client.xclaim(  # type: ignore[misc]
                stream, group, reader.consumer, min_idle_ms, ids), "XCLAIM")
            # an entry trimmed meanwhile (a latest edge) is dropped from the PEL by XCLAIM
            got.extend((eid, fields) for eid, fields in claimed
                       if eid is not None and fields is not None)
            if len(ids) < CLAIM_COUNT:
                return got


def keep_own(reader: GroupReader, min_idle_ms: int) -> int:
    """Reset the idle time of this consumer's pending entries idle ``min_idle_ms`` or more.

    ``XCLAIM ... JUSTID`` to itself: no delivery is counted, and an entry a sibling took
    over in between (so idle for less than ``min_idle_ms``) is not taken back.
    """
    client = reader.client
    touched = 0
    for spec in reader.specs.values():
        rows = reader.call(lambda s=spec: client.xpending_range(  # type: ignore[misc]
            s.stream, s.group, "-", "+", KEEP_COUNT, consumername=reader.consumer,
            idle=min_idle_ms), "XPENDING")
        ids = [r["message_id"] for r in rows]
        if ids:
            reader.call(lambda s=spec, ids=ids: client.xclaim(  # type: ignore[misc]
                s.stream, s.group, reader.consumer, min_idle_ms, ids, justid=True), "XCLAIM")
            touched += len(ids)
    return touched


class EntryKeeper(threading.Thread):
    """Keeps a live replica's entries its own: :func:`keep_own` every period, until stop.

    While ``stalled()`` is true (no progress for ``heartbeat_timeout_s``: its heartbeat is
    withheld too) it keeps nothing, so a stuck replica's entries go to a sibling.
    """

    def __init__(self, readers: list[GroupReader], stop: threading.Event,
                 claim_idle_ms: int, period_s: float = DEFAULT_HEARTBEAT_S,
                 stalled: Callable[[], bool] | None = None) -> None:
        super().__init__(name="entry-keeper", daemon=True)
        self.readers = readers
        self.stop = stop
        self.stalled = stalled
        # often enough that no entry of a live replica reaches the fallback's claim_idle_ms
        self.period_s = max(0.03, min(period_s, claim_idle_ms / 3000))

    def run(self) -> None:
        """Touch the entries in hand and read ahead, once per period."""
        min_idle_ms = max(1, int(self.period_s * 500))
        warned = False
        while not self.stop.wait(self.period_s):
            if self.stalled is not None and self.stalled():
                continue
            for reader in self.readers:
                try:
                    keep_own(reader, min_idle_ms)
                except InterruptedError:
                    return
                except RedisError as exc:  # a claim may then take them: a duplicate, no loss
                    if not warned:
                        warned = True
                        log.warning("could not keep pending entries of %s: %s",
                                    reader.consumer, exc)
