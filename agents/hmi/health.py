"""The health table of the operator screen: one row per agent, from the line's heartbeats.

Everything comes from the public health API (:mod:`procgraph.health`): the heartbeats every
replica publishes (:func:`procgraph.health.read_heartbeats`) and the backlog of each reading
agent's consumer groups (:func:`procgraph.health.group_lag` over
:func:`procgraph.health.line_streams`). :class:`LineHealthReader` does the reading;
:class:`HealthTracker` turns successive readings into rows with rates, restarts and lag.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from procgraph.health import (
    DEFAULT_HEARTBEAT_S,
    GroupLag,
    Heartbeat,
    RateMeter,
    group_lag,
    line_streams,
    read_heartbeats,
)

#: how often the list of the line's streams is refreshed (new streams are rare)
STREAMS_PERIOD_S = 5.0
#: a replica whose heartbeat has not changed for this long is shown down although its key
#: lives on (a frozen process: its key expires only after five periods, then the supervisor
#: restarts it, often within one poll of this screen)
FROZEN_S = 3 * DEFAULT_HEARTBEAT_S

Beats = Mapping[tuple[str, int], Heartbeat] | Iterable[Heartbeat]


class LineHealthReader:
    """Reads one graph's heartbeats and consumer-group lag through :mod:`procgraph.health`.

    ``client`` is a redis-py client of the broker the line's agents live on, or a callable
    returning one (called at the first read). Every read raises
    :class:`procgraph.errors.BrokerUnavailable` when the broker cannot be reached.
    """

    def __init__(self, client: redis.Redis | Callable[[], redis.Redis], graph: str,
                 streams_period_s: float = STREAMS_PERIOD_S) -> None:
        self._factory = client if callable(client) else None
        self._client: redis.Redis | None = None if callable(client) else client
        self.graph = graph
        self.streams_period_s = streams_period_s
        self._streams: list[str] = []
        self._streams_at: float | None = None

    @property
    def client(self) -> redis.Redis:
        """The broker client (created on first use when a factory was given)."""
        if self._client is None:
            assert self._factory is not None
            self._client = self._factory()
        return self._client

    def read(self) -> tuple[dict[tuple[str, int], Heartbeat], dict[str, GroupLag]]:
        """The live heartbeats by ``(agent, replica)`` and the lag per reading agent."""
        client = self.client
        now = time.monotonic()
        if self._streams_at is None or now - self._streams_at > self.streams_period_s:
            self._streams = line_streams(client, self.graph)
            self._streams_at = now
        beats = read_heartbeats(client, self.graph)
        return beats, group_lag(client, self._streams)


@dataclass
class _ReplicaSeen:
    started: float
    #: the ``ts`` of its last heartbeat, and when (this screen's clock) that ``ts`` was new
    ts: float = 0.0
    fresh_at: float = 0.0
    rate_in: float = 0.0
    rate_out: float = 0.0


@dataclass
class _AgentSeen:
    expected: int = 1
    restarts: int = 0
    reported_restarts: dict[int, int] = field(default_factory=dict)
    replicas: dict[int, _ReplicaSeen] = field(default_factory=dict)
    last_seen: float = 0.0


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


class HealthTracker:
    """Turns successive heartbeat readings into one health row per agent.

    Rates come from count deltas between two heartbeats of the same replica
    (:class:`procgraph.health.RateMeter`); a change of
    a replica's ``started`` time counts as a restart seen by this screen (the supervisor's
    own ``restarts`` count is used when it is higher); the number of replicas expected is
    the highest of what the heartbeats say and the highest replica index seen plus one.
    """

    def __init__(self) -> None:
        self._agents: dict[str, _AgentSeen] = {}
        self._rates = RateMeter()

    def update(
        self,
        beats: Beats,
        lags: Mapping[str, GroupLag] | None = None,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Feed the heartbeats alive right now; return the table rows, sorted by agent.

        A replica whose heartbeat has not changed for :data:`FROZEN_S` counts as not alive.
        ``beats`` is what :func:`procgraph.health.read_heartbeats` returns (or just the
        heartbeats); ``lags`` maps a reading agent (its consumer group) to its
        :class:`procgraph.health.GroupLag`, summed over the streams it reads.
        """
        now = time.time() if now is None else now
        lags = lags or {}
        found = beats.values() if isinstance(beats, Mapping) else beats
        alive: dict[str, dict[int, Heartbeat]] = {}
        for beat in found:
            if not isinstance(beat, Heartbeat):
                continue
            if self._observe(beat, now):
                alive.setdefault(beat.agent, {})[beat.replica] = beat
        rows = []
        for name in sorted(set(self._agents) | set(lags)):
            seen = self._agents.setdefault(name, _AgentSeen())
            rows.append(self._row(name, seen, alive.get(name, {}), lags.get(name), now))
        return rows

    def _observe(self, beat: Heartbeat, now: float) -> bool:
        """Take one heartbeat in; True while its replica is alive (its heartbeat not frozen)."""
        seen = self._agents.setdefault(beat.agent, _AgentSeen())
        seen.expected = max(seen.expected, beat.replica + 1, beat.replicas)
        seen.reported_restarts[beat.replica] = beat.restarts
        count_in = sum(port.count for port in beat.inputs.values())
        count_out = sum(port.count for port in beat.outputs.values())
        prev = seen.replicas.get(beat.replica)
        if prev is not None and beat.started != prev.started:
            seen.restarts += 1
        if prev is None or beat.started != prev.started:
            prev = seen.replicas[beat.replica] = _ReplicaSeen(beat.started)
        if beat.ts != prev.ts:
            prev.ts, prev.fresh_at = beat.ts, now
        seen.last_seen = max(seen.last_seen, prev.fresh_at)
        if now - prev.fresh_at > FROZEN_S:
            return False
        key = (beat.agent, beat.replica)
        prev.rate_in = self._rates.rate((*key, "in"), beat, count_in)
        prev.rate_out = self._rates.rate((*key, "out"), beat, count_out)
        return True

    def _row(self, name: str, seen: _AgentSeen, beats: dict[int, Heartbeat],
             lag: GroupLag | None, now: float) -> dict[str, Any]:
        latencies: list[float] = []
        errors = dead = 0
        blocked = 0.0
        for beat in beats.values():
            for inp in beat.inputs.values():
                if inp.latency_ms is not None and math.isfinite(inp.latency_ms):
                    latencies.append(inp.latency_ms)
                errors += inp.errors
                dead += inp.dead
            blocked += sum(_finite(out.blocked_s) for out in beat.outputs.values())
        live = [seen.replicas[i] for i in beats if i in seen.replicas]
        alive = len(beats)
        status = "down" if alive == 0 else "degraded" if alive < seen.expected else "ok"
        if status == "ok" and dead:
            status = "warn"
        return {
            "agent": name,
            "status": status,
            "alive": alive,
            "expected": seen.expected,
            "restarts": max(seen.restarts, sum(seen.reported_restarts.values())),
            "rate_in": round(sum(r.rate_in for r in live), 1),
            "rate_out": round(sum(r.rate_out for r in live), 1),
            "latency_p50_ms": round(max(latencies), 1) if latencies else None,
            "lag": lag.lag if lag is not None else None,
            "pending": lag.pending if lag is not None else None,
            "errors": errors,
            "dead": dead,
            "blocked_s": round(blocked, 1),
            "uptime_s": round(now - min(r.started for r in live), 0) if live else None,
            "last_seen_s": round(now - seen.last_seen, 1) if seen.last_seen else None,
        }
