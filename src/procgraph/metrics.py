"""Prometheus/OpenMetrics metrics of a running line, served by its supervisor.

:class:`LineCollector` is a custom ``prometheus_client`` collector: on each scrape it reads,
per broker, the replicas' heartbeats, the dead-letter counts and the line counters in one
pipeline, and the edges' delivery figures (:func:`procgraph.health.edge_stats`, one more
pipeline), and turns them into metric families. Nothing is kept between scrapes: the
counters are the replicas' own (since each replica started: Prometheus' ``rate()`` and
``increase()`` handle the resets of a restart), the edge figures the broker's.

:class:`MetricsServer` serves them over HTTP (``/metrics``, text or OpenMetrics as the
scraper asks) from a daemon thread. Every name exported is in :data:`METRIC_NAMES`; the
Grafana dashboard in ``deploy/grafana/`` uses only those.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from procgraph.constants import dead_letter_key, line_counters_key
from procgraph.errors import BrokerUnavailable, broker_unavailable_as
from procgraph.health import (
    HANDLER_BUCKETS_MS,
    LATENCY_BUCKETS_MS,
    Heartbeat,
    edge_stats,
    heartbeat_keys,
    parse_heartbeats,
)
from procgraph.safetext import printable

if TYPE_CHECKING:
    from procgraph.graph import GraphPlan

log = logging.getLogger("procgraph.metrics")

#: line counters named ``parts:<outcome>`` are exported as parts by outcome
PARTS_PREFIX = "parts:"

_R = ("graph", "agent", "replica")
_P = (*_R, "port")
_E = ("graph", "stream", "group")

#: every family: name (counters without ``_total``), kind, help, labels
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "procgraph_up": ("gauge", "1 while the replica's heartbeat is live, else 0", _R),
    "procgraph_restarts": ("counter", "restarts of the replica by its supervisor", _R),
    "procgraph_messages_in": ("counter", "entries handled and acknowledged by an input port "
                              "(since the replica started)", _P),
    "procgraph_messages_out": ("counter", "messages sent by an output port", _P),
    "procgraph_handler_errors": ("counter", "handler attempts that raised", _P),
    "procgraph_dead_lettered": ("counter", "entries an input port moved to dead letters", _P),
    "procgraph_reclaimed": ("counter", "entries taken over from a dead replica", _P),
    "procgraph_output_blocked_seconds": ("counter", "time an output port was held back by "
                                         "lossless backpressure", _P),
    "procgraph_input_latency_seconds": ("histogram", "message created -> handled, per input "
                                        "port (since the replica started)", _P),
    "procgraph_handler_seconds": ("histogram", "time of each handler call (a batch is one "
                                  "call), per input port", _P),
    "procgraph_end_to_end_latency_seconds": ("histogram", "end-to-end: the trace's origin "
                                             "(capture) -> end of this handler, per input "
                                             "port (the PLC agent: capture -> PLC written)",
                                             _P),
    "procgraph_edge_lag": ("gauge", "entries of the stream the group has not read yet", _E),
    "procgraph_edge_pending": ("gauge", "entries delivered to the group, not yet acked", _E),
    "procgraph_edge_acked": ("counter", "entries the group acknowledged", _E),
    "procgraph_edge_dropped": ("counter", "entries trimmed before the group read them "
                               "(latest policy)", _E),
    "procgraph_edge_dead_lettered": ("counter", "entries the group moved to dead letters "
                                     "(exact, kept by the broker)", _E),
    "procgraph_stream_entries_added": ("counter", "entries ever added to the stream",
                                       ("graph", "stream")),
    "procgraph_dead_letters": ("gauge", "entries in the stream's dead-letter stream",
                               ("graph", "stream")),
    "procgraph_parts": ("counter", "parts by outcome (line counters parts:<outcome>)",
                        ("graph", "outcome")),
    "procgraph_line_events": ("counter", "line counters (e.g. broker_data_lost)",
                              ("graph", "counter")),
    "procgraph_broker_up": ("gauge", "1 when the last scrape reached the broker",
                            ("graph", "broker")),
}


def _sample_names(name: str, kind: str) -> list[str]:
    if kind == "counter":
        return [f"{name}_total"]
    if kind == "histogram":
        return [f"{name}_bucket", f"{name}_count", f"{name}_sum"]
    return [name]


#: every sample name the endpoint can expose (what dashboards and alerts may query)
METRIC_NAMES: frozenset[str] = frozenset(
    n for name, (kind, _, _) in FAMILIES.items() for n in _sample_names(name, kind))


def _family(name: str) -> Any:
    """An empty family (Counter/Gauge/HistogramMetricFamily: each has ``add_metric``)."""
    kind, doc, labels = FAMILIES[name]
    cls = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily,
           "histogram": HistogramMetricFamily}[kind]
    return cls(name, doc, labels=list(labels))


@dataclass
class _BrokerRead:
    beats: dict[tuple[str, int], Heartbeat]
    dead: dict[str, int]
    counters: dict[str, int]


class LineCollector(Collector):
    """Reads a line's state from its brokers on each scrape and yields metric families.

    ``clients`` maps broker names to redis-py clients; ``restarts`` returns the supervisor's
    restart count per ``(agent, replica)`` (missing ones are taken from the heartbeats).
    Only the agents placed on ``node`` (all when None) are reported, so that several nodes'
    supervisors do not report the same replicas and edges twice; the line counters are
    exported by one of them (:meth:`reports_line_counters`).
    """

    def __init__(self, plan: GraphPlan, clients: Mapping[str, redis.Redis],
                 restarts: Callable[[], Mapping[tuple[str, int], int]] | None = None,
                 node: str | None = None) -> None:
        self.plan = plan
        self.clients = clients
        self.restarts = restarts or (lambda: {})
        self.node = node
        self.agents = plan.agents_on(node)

    def _read(self, broker: str, client: redis.Redis,
              replicas: list[tuple[str, int]], streams: list[str]) -> _BrokerRead:
        """Heartbeats, dead-letter lengths and line counters: one pipeline."""
        graph = self.plan.name
        with broker_unavailable_as(f"read metrics of graph {graph!r} on broker {broker!r}"):
            pipe = client.pipeline(transaction=False)
            if replicas:
                pipe.mget(heartbeat_keys(graph, replicas))
            for stream in streams:
                pipe.xlen(dead_letter_key(stream))
            pipe.hgetall(line_counters_key(graph))
            replies: list[Any] = pipe.execute()
        beats = parse_heartbeats(replies.pop(0), graph) if replicas else {}
        dead = {s: int(n or 0) for s, n in zip(streams, replies[:len(streams)], strict=True)}
        counters: dict[str, int] = {}
        for k, v in replies[-1].items():
            try:
                counters[printable(k.decode("utf-8", "backslashreplace")
                                   if isinstance(k, bytes) else str(k), 100)] = int(v)
            except (TypeError, ValueError):
                continue
        return _BrokerRead(beats, dead, counters)

    def collect(self) -> Iterator[Metric]:
        """One scrape: read every broker, yield every family (also empty ones)."""
        fam: dict[str, Any] = {name: _family(name) for name in FAMILIES}
        graph = self.plan.name
        restarts = dict(self.restarts())
        counters: dict[str, int] = {}
        for broker, client in self.clients.items():
            agents = [a for a in self.agents if a.broker == broker]
            replicas = [(a.name, i) for a in agents for i in range(a.replicas)]
            streams = sorted({inp.stream for a in self.agents for inp in a.inputs
                              if inp.broker == broker})
            try:
                got = self._read(broker, client, replicas, streams)
                edges = edge_stats(client, streams)
            except (BrokerUnavailable, redis.RedisError) as exc:
                log.warning("metrics: broker %r unreachable: %s", broker, exc)
                fam["procgraph_broker_up"].add_metric([graph, broker], 0)
                for a, r in replicas:
                    fam["procgraph_up"].add_metric([graph, a, str(r)], 0)
                continue
            fam["procgraph_broker_up"].add_metric([graph, broker], 1)
            self._replicas(fam, replicas, got.beats, restarts)
            readers = {(inp.stream, a.name) for a in self.agents for inp in a.inputs}
            for (stream, group), e in sorted(edges.items()):
                if (stream, group) not in readers:
                    continue
                labels = [graph, stream, group]
                if e.unread is not None:
                    fam["procgraph_edge_lag"].add_metric(labels, e.unread)
                fam["procgraph_edge_pending"].add_metric(labels, e.pending)
                if e.read is not None:
                    fam["procgraph_edge_acked"].add_metric(labels, max(0, e.read - e.pending))
                if e.dropped is not None:
                    fam["procgraph_edge_dropped"].add_metric(labels, e.dropped)
                if e.dead is not None:
                    fam["procgraph_edge_dead_lettered"].add_metric(labels, e.dead)
            for stream in streams:
                added = next((e.added for (s, _), e in edges.items() if s == stream), None)
                if added is not None:
                    fam["procgraph_stream_entries_added"].add_metric([graph, stream], added)
                fam["procgraph_dead_letters"].add_metric([graph, stream], got.dead[stream])
            if self.reports_line_counters(broker):
                for name, value in got.counters.items():
                    counters[name] = counters.get(name, 0) + value
        for name, value in sorted(counters.items()):
            if name.startswith(PARTS_PREFIX):
                fam["procgraph_parts"].add_metric([graph, name[len(PARTS_PREFIX):]], value)
            else:
                fam["procgraph_line_events"].add_metric([graph, name], value)
        yield from fam.values()

    def reports_line_counters(self, broker: str) -> bool:
        """Whether this collector exports the line counters kept on ``broker``.

        Line counters (parts by outcome, line events) belong to the whole line, not to a
        node: with several nodes' supervisors only one exports them, so that summing over
        scrape targets counts each once. That is the supervisor without ``--node``, else the
        broker's own node (an embedded broker's ``node:``), else the first node (by name)
        the graph places agents on.
        """
        if self.node is None:
            return True
        spec = self.plan.brokers.get(broker)
        owner = spec.node if spec is not None else None
        if owner is None:
            nodes = sorted({a.node for a in self.plan.agents.values() if a.node is not None})
            owner = nodes[0] if nodes else None
        return owner is None or owner == self.node

    def _replicas(self, fam: dict[str, Any], replicas: list[tuple[str, int]],
                  beats: Mapping[tuple[str, int], Heartbeat],
                  restarts: Mapping[tuple[str, int], int]) -> None:
        graph = self.plan.name
        for a, r in replicas:
            rl = [graph, a, str(r)]
            beat = beats.get((a, r))
            fam["procgraph_up"].add_metric(rl, 1 if beat is not None else 0)
            count = restarts.get((a, r), beat.restarts if beat is not None else None)
            if count is not None:
                fam["procgraph_restarts"].add_metric(rl, count)
            if beat is None:
                continue
            for port, i in sorted(beat.inputs.items()):
                pl = [*rl, port]
                fam["procgraph_messages_in"].add_metric(pl, i.count)
                fam["procgraph_handler_errors"].add_metric(pl, i.errors)
                fam["procgraph_dead_lettered"].add_metric(pl, i.dead)
                fam["procgraph_reclaimed"].add_metric(pl, i.reclaimed)
                _histogram(fam["procgraph_input_latency_seconds"], pl, LATENCY_BUCKETS_MS,
                           i.latency_buckets, i.latency_sum_ms)
                _histogram(fam["procgraph_handler_seconds"], pl, HANDLER_BUCKETS_MS,
                           i.handler_buckets, i.handler_sum_ms)
                _histogram(fam["procgraph_end_to_end_latency_seconds"], pl, LATENCY_BUCKETS_MS,
                           i.e2e_buckets, i.e2e_sum_ms)
            for port, o in sorted(beat.outputs.items()):
                pl = [*rl, port]
                fam["procgraph_messages_out"].add_metric(pl, o.count)
                fam["procgraph_output_blocked_seconds"].add_metric(pl, o.blocked_s)


def _histogram(family: Any, labels: list[str], bounds_ms: tuple[float, ...],
               buckets: list[int] | None, sum_ms: float | None) -> None:
    """Add a heartbeat's cumulative histogram (ms) to ``family`` in seconds; skip a missing
    or malformed one (another version's bounds)."""
    if buckets is None or len(buckets) != len(bounds_ms) + 1:
        return
    bounds = [f"{b / 1000:g}" for b in bounds_ms] + ["+Inf"]
    family.add_metric(labels, list(zip(bounds, buckets, strict=True)), (sum_ms or 0.0) / 1000)


class MetricsServer:
    """Serves a :class:`LineCollector` at ``http://host:port/metrics`` from a thread."""

    def __init__(self, collector: LineCollector, host: str = "127.0.0.1", port: int = 0
                 ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.host = host
        self._server, self._thread = start_http_server(port, host, self.registry)
        self.port = int(self._server.server_port)

    @property
    def url(self) -> str:
        """Where Prometheus scrapes: ``http://host:port/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
