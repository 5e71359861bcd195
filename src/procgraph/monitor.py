"""A running line seen from outside, one snapshot at a time: what ``procgraph top`` shows.

Everything is read from the brokers, read-only, through :mod:`procgraph.health`: the
heartbeats the replicas publish (alive replicas, restarts, counts, p50 latency, time blocked
by backpressure, entries reclaimed from dead replicas), the edges of the input streams
(:func:`procgraph.health.edge_stats`: lag, pending, entries dropped by ``latest`` trimming),
the dead-letter streams and the line counters (e.g. ``broker_data_lost``). Rates come from
count changes between two snapshots. Text read from a broker (line counter names, error
texts) comes escaped and capped by :func:`procgraph.safetext.printable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import redis

from procgraph.errors import BrokerUnavailable, broker_unavailable_as
from procgraph.graph import AgentPlan, GraphPlan
from procgraph.health import (
    Heartbeat,
    RateMeter,
    dead_letters,
    edge_stats,
    read_heartbeats,
    read_line_counters,
)
from procgraph.redact import redact, redact_url
from procgraph.safetext import printable


@dataclass
class Row:
    """One line of the table: one port of one agent (None: not known yet)."""

    agent: str
    alive: int
    expected: int
    restarts: int
    port: str
    count: int | None = None
    rate: float | None = None
    lag: int | None = None
    pending: int | None = None
    dead: int | None = None
    p50_ms: float | None = None
    blocked_s: float | None = None
    dropped: int | None = None
    reclaimed: int | None = None


class LineMonitor:
    """Reads one snapshot of a graph's state per :meth:`sample` call.

    ``urls`` maps each broker name to its URL (see
    :func:`procgraph.brokers.resolve_broker_urls`). Use it as a context manager, or call
    :meth:`close`, to close the broker connections.
    """

    def __init__(self, plan: GraphPlan, urls: Mapping[str, str]) -> None:
        self.plan = plan
        self.urls = dict(urls)
        self.clients = {
            name: redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
            for name, url in self.urls.items()
        }
        self._rates = RateMeter()

    def close(self) -> None:
        """Close the broker connections."""
        for client in self.clients.values():
            client.close()

    def __enter__(self) -> LineMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        """PING every broker; raise BrokerUnavailable naming the first one unreachable."""
        for name, client in self.clients.items():
            try:
                with broker_unavailable_as("ping"):
                    client.ping()
            except BrokerUnavailable as exc:
                raise BrokerUnavailable(
                    f"cannot reach broker {name!r} at {redact_url(self.urls[name])}: "
                    f"{printable(redact(str(exc.__cause__)))}"
                ) from exc

    def _port_totals(self, agent: str, beats: list[Heartbeat], port: str, inputs: bool
                     ) -> tuple[int | None, float | None]:
        """Count and rate of one port, summed over the live replicas that report it."""
        count = rate = None
        for beat in beats:
            stats = beat.inputs.get(port) if inputs else beat.outputs.get(port)
            if stats is None:
                continue
            key = (agent, beat.replica, f"{'in' if inputs else 'out'}:{port}")
            count = (count or 0) + stats.count
            rate = (rate or 0.0) + self._rates.rate(key, beat, stats.count)
        return count, rate

    def _agent_rows(self, agent: AgentPlan, beats: list[Heartbeat]) -> list[Row]:
        restarts = sum(b.restarts for b in beats)
        rows: list[Row] = []
        for inp in agent.inputs:
            client = self.clients[inp.broker]
            count, rate = self._port_totals(agent.name, beats, inp.port, inputs=True)
            edge = edge_stats(client, [inp.stream]).get((inp.stream, agent.name))
            lat = [i.latency_ms for b in beats if (i := b.inputs.get(inp.port)) is not None
                   and i.latency_ms is not None]
            reclaimed = [i.reclaimed for b in beats if (i := b.inputs.get(inp.port)) is not None]
            rows.append(Row(
                agent.name, len(beats), agent.replicas, restarts, f"in:{inp.port}",
                count=count, rate=rate, lag=None if edge is None else edge.unread,
                pending=None if edge is None else edge.pending,
                dead=dead_letters(client, [inp.stream])[inp.stream],
                p50_ms=max(lat) if lat else None,
                dropped=None if edge is None else edge.dropped,
                reclaimed=sum(reclaimed) if reclaimed else None))
        for out in agent.outputs:
            count, rate = self._port_totals(agent.name, beats, out.port, inputs=False)
            blocked = [o.blocked_s for b in beats if (o := b.outputs.get(out.port)) is not None]
            rows.append(Row(agent.name, len(beats), agent.replicas, restarts,
                            f"out:{out.port}", count=count, rate=rate,
                            blocked_s=sum(blocked) if blocked else None))
        if not agent.inputs and not agent.outputs:
            rows.append(Row(agent.name, len(beats), agent.replicas, restarts, "-"))
        return rows

    def line_counters(self) -> dict[str, int]:
        """The line counters of the graph (e.g. ``broker_data_lost``), summed over brokers.

        Their names are read from the broker, so they come escaped and capped (printable).
        """
        out: dict[str, int] = {}
        for client in self.clients.values():
            for raw, value in read_line_counters(client, self.plan.name).items():
                name = printable(raw, 100)
                out[name] = out.get(name, 0) + value
        return out

    def sample(self) -> list[Row]:
        """One row per agent port; raises BrokerUnavailable when a broker is gone."""
        rows: list[Row] = []
        for agent in self.plan.agents.values():
            found = read_heartbeats(self.clients[agent.broker], self.plan.name,
                                    [(agent.name, i) for i in range(agent.replicas)])
            beats = [found[k] for k in sorted(found)]
            rows += self._agent_rows(agent, beats)
        return rows
