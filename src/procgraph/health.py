"""Health of a running line: the heartbeat every replica publishes, and how to read it.

One versioned model, :class:`Heartbeat`, is written by the agent runtime about once a second
into an expiring key (``procgraph.constants.heartbeat_key``); a replica that dies or stops
making progress lets it expire. The supervisor, ``procgraph check``, ``procgraph top``, the
HMI and metrics exporters all read it through :func:`read_heartbeats`, and consumer-group
backlogs through :func:`group_lag`. Readers skip heartbeats they cannot parse or that carry
another version, so a mixed-version line degrades to "unknown", never to a crash.

Every function takes a redis-py client of the broker the replicas' agents live on and raises
:class:`procgraph.errors.BrokerUnavailable` when it cannot be reached.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from procgraph.constants import (
    DEAD_LETTER_SUFFIX,
    HEARTBEAT_TTL_PERIODS,
    dead_letter_key,
    heartbeat_key,
    heartbeat_pattern,
    line_counters_key,
    stream_pattern,
)
from procgraph.constants import DEFAULT_HEARTBEAT_S as DEFAULT_HEARTBEAT_S
from procgraph.edges import EdgeStats as EdgeStats
from procgraph.edges import count_read as count_read
from procgraph.edges import create_group_counted as create_group_counted
from procgraph.edges import edge_stats as edge_stats
from procgraph.edges import edges_key as edges_key
from procgraph.errors import BrokerUnavailable, broker_unavailable_as
from procgraph.redact import redact_url

if TYPE_CHECKING:
    from procgraph.graph import GraphPlan

#: version of the heartbeat record; readers ignore records of other versions
HEARTBEAT_VERSION = 1
#: upper bounds (ms) of the optional latency histogram of an input port (+Inf implied)
LATENCY_BUCKETS_MS: tuple[float, ...] = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500,
                                         5000, 10000)
#: upper bounds (ms) of the optional handler-time histogram of an input port (+Inf implied)
HANDLER_BUCKETS_MS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500,
                                         1000, 2500, 10000)


class InputHealth(BaseModel):
    """Counters of one input port since the replica started."""

    model_config = ConfigDict(extra="ignore")

    count: int = Field(0, description="entries handled and acknowledged")
    errors: int = Field(0, description="handler attempts that raised")
    dead: int = Field(0, description="entries moved to the dead-letter stream")
    latency_ms: float | None = Field(None, description="p50 creation -> handled, recent")
    reclaimed: int = Field(0, description="entries taken over from a dead replica (claims)")
    latency_buckets: list[int] | None = Field(None, description=(
        "optional: cumulative counts of creation -> handled latencies <= each bound of "
        "LATENCY_BUCKETS_MS, then the total (+Inf), since the replica started"))
    latency_sum_ms: float | None = Field(None, description="optional: sum of those latencies")
    handler_buckets: list[int] | None = Field(None, description=(
        "optional: cumulative counts of handler calls that took <= each bound of "
        "HANDLER_BUCKETS_MS, then the total (+Inf), since the replica started"))
    handler_sum_ms: float | None = Field(None, description="optional: sum of those times")
    e2e_buckets: list[int] | None = Field(None, description=(
        "optional: cumulative counts of end-to-end latencies (trace origin, e.g. the capture, "
        "-> end of the handler) <= each bound of LATENCY_BUCKETS_MS, then the total (+Inf)"))
    e2e_sum_ms: float | None = Field(None, description="optional: sum of those latencies")


class OutputHealth(BaseModel):
    """Counters of one output port since the replica started."""

    model_config = ConfigDict(extra="ignore")

    count: int = Field(0, description="messages sent")
    blocked_s: float = Field(0.0, description="time held back by lossless backpressure")


class Heartbeat(BaseModel):
    """What one live replica says about itself, about once per heartbeat period."""

    model_config = ConfigDict(extra="ignore")

    v: int = HEARTBEAT_VERSION
    graph: str
    agent: str
    replica: int
    replicas: int = Field(1, description="replicas the graph asks for")
    pid: int
    host: str = ""
    started: float = Field(description="when the replica started (Unix seconds)")
    ts: float = Field(description="when this heartbeat was written (Unix seconds)")
    restarts: int = Field(0, description="restarts of this replica by its supervisor")
    inputs: dict[str, InputHealth] = Field(default_factory=dict)
    outputs: dict[str, OutputHealth] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        """``agent[replica]``, as the supervisor's log prefixes show it."""
        return f"{self.agent}[{self.replica}]"

    def age_s(self, now: float | None = None) -> float:
        """Seconds since this heartbeat was written."""
        return (time.time() if now is None else now) - self.ts


class GroupLag(BaseModel):
    """Backlog of one reading agent's consumer groups, summed over its input streams."""

    lag: int | None = Field(0, description="entries not yet read (None: the broker can't tell)")
    pending: int = Field(0, description="entries read but not yet acknowledged")


def heartbeat_ttl_s(period_s: float = DEFAULT_HEARTBEAT_S) -> float:
    """How long a heartbeat stays visible after it was written."""
    return period_s * HEARTBEAT_TTL_PERIODS


def write_heartbeat(client: redis.Redis, beat: Heartbeat,
                    period_s: float = DEFAULT_HEARTBEAT_S) -> None:
    """Publish ``beat``; it expires unless written again within a few periods."""
    key = heartbeat_key(beat.graph, beat.agent, beat.replica)
    with broker_unavailable_as(f"write heartbeat of {beat.name}"):
        client.set(key, beat.model_dump_json(), px=int(heartbeat_ttl_s(period_s) * 1000))


def clear_heartbeat(client: redis.Redis, graph: str, agent: str, replica: int) -> None:
    """Remove a replica's heartbeat at once (a clean stop), instead of letting it expire."""
    with broker_unavailable_as(f"clear heartbeat of {agent}[{replica}]"):
        client.delete(heartbeat_key(graph, agent, replica))


def heartbeat_ttls_ms(
    client: redis.Redis, graph: str, agent: str, replicas: Iterable[int]
) -> dict[int, int]:
    """Per replica of ``agent``: milliseconds its heartbeat has left (-2: none, -1: no TTL).

    The broker's own clock says how fresh a heartbeat is, so no host clocks are compared.
    """
    indexes = list(replicas)
    with broker_unavailable_as(f"read heartbeat TTLs of {agent!r}"):
        pipe = client.pipeline(transaction=False)
        for i in indexes:
            pipe.pttl(heartbeat_key(graph, agent, i))
        ttls = pipe.execute()
    return {i: int(t) for i, t in zip(indexes, ttls, strict=True)}


def parse_heartbeat(raw: bytes | str | None) -> Heartbeat | None:
    """A heartbeat from its stored JSON, or None if absent, malformed or another version."""
    if raw is None:
        return None
    try:
        beat = Heartbeat.model_validate_json(raw)
    except (ValidationError, ValueError, UnicodeDecodeError):
        return None
    return beat if beat.v == HEARTBEAT_VERSION else None


def heartbeat_keys(graph: str, replicas: Iterable[tuple[str, int]]) -> list[str]:
    """The heartbeat keys of these ``(agent, replica)``: to MGET in a caller's own pipeline,
    then :func:`parse_heartbeats` (the metrics collector reads everything in one)."""
    return [heartbeat_key(graph, a, r) for a, r in replicas]


def parse_heartbeats(values: Iterable[bytes | str | None], graph: str
                     ) -> dict[tuple[str, int], Heartbeat]:
    """The valid heartbeats of ``graph`` among raw MGET ``values``, by ``(agent, replica)``."""
    out: dict[tuple[str, int], Heartbeat] = {}
    for raw in values:
        beat = parse_heartbeat(raw)
        if beat is not None and beat.graph == graph:
            out[(beat.agent, beat.replica)] = beat
    return out


def read_heartbeats(
    client: redis.Redis,
    graph: str,
    replicas: Iterable[tuple[str, int]] | None = None,
) -> dict[tuple[str, int], Heartbeat]:
    """The live heartbeats of a graph's replicas on this broker, by ``(agent, replica)``.

    With ``replicas`` only those are read (one MGET); without, every heartbeat of the graph
    is found by SCAN. A replica without a (valid) heartbeat is simply absent.
    """
    with broker_unavailable_as(f"read heartbeats of graph {graph!r}"):
        if replicas is None:
            keys = list(client.scan_iter(match=heartbeat_pattern(graph), count=500))
        else:
            keys = heartbeat_keys(graph, replicas)
        values = client.mget(keys) if keys else []
    return parse_heartbeats(values, graph)


def line_streams(client: redis.Redis, graph: str) -> list[str]:
    """Every stream of a graph on this broker (dead-letter streams left out), sorted."""
    with broker_unavailable_as(f"list streams of graph {graph!r}"):
        found = client.scan_iter(match=stream_pattern(graph), count=500, _type="STREAM")
        names = {k.decode() if isinstance(k, bytes) else str(k) for k in found}
    return sorted(n for n in names if not n.endswith(DEAD_LETTER_SUFFIX))


def group_lag(client: redis.Redis, streams: Iterable[str]) -> dict[str, GroupLag]:
    """Per consumer group (= reading agent) on these streams: entries unread and unacked."""
    streams = list(streams)
    if not streams:
        return {}
    with broker_unavailable_as("read consumer groups"):
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.xinfo_groups(stream)
        replies: list[Any] = pipe.execute(raise_on_error=False)
    out: dict[str, GroupLag] = {}
    for groups in replies:
        if not isinstance(groups, list):
            continue  # trimmed away, or not a stream any more
        for group in groups:
            raw_name = group.get("name")
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            row = out.setdefault(name, GroupLag())
            lag = group.get("lag")
            row.lag = None if lag is None or row.lag is None else row.lag + int(lag)
            row.pending += int(group.get("pending") or 0)
    return out


def dead_letters(client: redis.Redis, streams: Iterable[str]) -> dict[str, int]:
    """Per stream: how many entries its dead-letter stream holds (0 when it has none)."""
    streams = list(streams)
    if not streams:
        return {}
    with broker_unavailable_as("read dead-letter streams"):
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(dead_letter_key(stream))
        counts: list[Any] = pipe.execute()
    return {stream: int(n or 0) for stream, n in zip(streams, counts, strict=True)}


class LineCheck(BaseModel):
    """What :func:`check_line` found: the replicas with and without a live heartbeat."""

    alive: list[str] = Field(default_factory=list, description="``agent[i]`` with a heartbeat")
    missing: list[str] = Field(default_factory=list, description="``agent[i]`` without one")

    @property
    def ok(self) -> bool:
        """Every replica checked has a live heartbeat."""
        return not self.missing


def check_line(
    plan: GraphPlan,
    urls: Mapping[str, str],
    agent: str | None = None,
    replica: int | None = None,
) -> LineCheck:
    """Which replicas of a graph (or of one agent, or one replica) have a live heartbeat.

    ``urls`` maps each broker name of the graph to its URL (see
    :func:`procgraph.brokers.resolve_broker_urls`). Raises KeyError for an agent the graph
    does not have, and BrokerUnavailable naming the broker and URL it cannot reach.
    """
    if agent is not None and agent not in plan.agents:
        raise KeyError(agent)
    result = LineCheck()
    clients: dict[str, redis.Redis] = {}
    try:
        for a in plan.agents.values():
            if agent is not None and a.name != agent:
                continue
            indexes = [replica] if replica is not None else list(range(a.replicas))
            if a.broker not in clients:
                clients[a.broker] = redis.Redis.from_url(
                    urls[a.broker], socket_connect_timeout=2, socket_timeout=2)
            try:
                beats = read_heartbeats(clients[a.broker], plan.name,
                                        [(a.name, i) for i in indexes])
            except BrokerUnavailable as exc:
                raise BrokerUnavailable(f"cannot reach broker {a.broker!r} at "
                                        f"{redact_url(urls[a.broker])}: {exc.__cause__}"
                                        ) from exc
            for i in indexes:
                found = (a.name, i) in beats
                (result.alive if found else result.missing).append(f"{a.name}[{i}]")
    finally:
        for client in clients.values():
            client.close()
    return result


@dataclass
class _Sample:
    pid: int
    started: float
    count: int
    ts: float
    rate: float


class RateMeter:
    """Messages per second of a counter in successive heartbeats of the same replica.

    Feed it each heartbeat reading; the rate is the count change between two heartbeats
    of the same process. On the first look, or after a restart (new pid or start time),
    it is the replica's average since it started. A heartbeat not refreshed since the last
    look keeps the last rate.
    """

    def __init__(self) -> None:
        self._seen: dict[Any, _Sample] = {}

    def rate(self, key: Any, beat: Heartbeat, count: int) -> float:
        """The rate of ``count`` (one counter of ``beat``) tracked under ``key``."""
        prev = self._seen.get(key)
        if (prev is not None and prev.pid == beat.pid and prev.started == beat.started
                and count >= prev.count):
            if beat.ts <= prev.ts:
                return prev.rate
            rate = (count - prev.count) / (beat.ts - prev.ts)
        else:
            rate = count / max(beat.ts - beat.started, 1e-3) if count else 0.0
        self._seen[key] = _Sample(beat.pid, beat.started, count, beat.ts, rate)
        return rate


# -- line counters: events of the whole line that no single replica outlives ---------------
def add_line_counter(client: redis.Redis, graph: str, name: str, amount: int = 1) -> None:
    """Add ``amount`` to the line counter ``name`` (e.g. ``broker_data_lost``)."""
    with broker_unavailable_as(f"count {name} of graph {graph!r}"):
        client.hincrby(line_counters_key(graph), name, amount)


def read_line_counters(client: redis.Redis, graph: str) -> dict[str, int]:
    """Every line counter of ``graph`` on this broker (empty when none was ever counted)."""
    with broker_unavailable_as(f"read counters of graph {graph!r}"):
        raw = client.hgetall(line_counters_key(graph))
    out: dict[str, int] = {}
    for k, v in raw.items():
        name = k.decode("utf-8", "backslashreplace") if isinstance(k, bytes) else str(k)
        try:
            out[name] = int(v)
        except (TypeError, ValueError):
            continue
    return out
