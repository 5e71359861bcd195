"""The heartbeat: a replica says it is alive and making progress, about once a second.

A thread writes a :class:`procgraph.health.Heartbeat` with
:func:`procgraph.health.write_heartbeat` every period into an expiring key. While the agent
shows no progress for ``timeout_s`` (a handler or source loop stuck), the heartbeat is
withheld, so it expires and the supervisor restarts the replica. A clean stop clears it.
The same thread adds what the agent counted with ``context.count`` to the line counters once
per period (:func:`flush_counts`), so counting costs no broker call per message.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis

from procgraph.binding import AgentBinding
from procgraph.constants import DEFAULT_HEARTBEAT_S, line_counters_key
from procgraph.context import AgentContext
from procgraph.errors import BrokerUnavailable, broker_unavailable_as
from procgraph.health import (
    HANDLER_BUCKETS_MS,
    LATENCY_BUCKETS_MS,
    Heartbeat,
    InputHealth,
    OutputHealth,
    write_heartbeat,
)
from procgraph.settings import load_settings

log = logging.getLogger("procgraph.runtime")


class Histogram:
    """Counts of values (ms) in the buckets of ``bounds`` (+Inf implied), and their sum.

    ``observe`` is one bisect and two additions: cheap on the hot path.
    """

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_MS) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.sum_ms = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` (ms) in its bucket."""
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1
        self.sum_ms += value

    def cumulative(self) -> list[int]:
        """Counts <= each bound, then the total (Prometheus' cumulative buckets)."""
        out, total = [], 0
        for n in self.buckets:
            total += n
            out.append(total)
        return out


class LatencyWindow(deque[float]):
    """The recent latencies (ms, for the p50), and a histogram of all since the start.

    Each ``append`` also counts the value in its bucket of
    :data:`procgraph.health.LATENCY_BUCKETS_MS` (one bisect: cheap on the hot path).
    """

    def __init__(self, maxlen: int = 200) -> None:
        super().__init__(maxlen=maxlen)
        self.histogram = Histogram(LATENCY_BUCKETS_MS)

    @property
    def buckets(self) -> list[int]:
        """Counts per bucket (not cumulative)."""
        return self.histogram.buckets

    @property
    def sum_ms(self) -> float:
        """Sum of every latency appended."""
        return self.histogram.sum_ms

    def append(self, value: float) -> None:
        """Keep ``value`` in the window and count it in the histogram."""
        super().append(value)
        self.histogram.observe(value)

    def cumulative(self) -> list[int]:
        """Counts <= each bound, then the total (Prometheus' cumulative buckets)."""
        return self.histogram.cumulative()


@dataclass
class PortStats:
    """Counters of one input port, published with the heartbeat.

    ``latency_ms``: message created -> handled; ``handler_ms``: time of each handler call
    (a batch is one call); ``e2e_ms``: the trace's origin (the capture) -> end of the
    handler, per entry.
    """

    count: int = 0
    errors: int = 0
    dead: int = 0
    reclaimed: int = 0
    latency_ms: LatencyWindow = field(default_factory=LatencyWindow)
    handler_ms: Histogram = field(default_factory=lambda: Histogram(HANDLER_BUCKETS_MS))
    e2e_ms: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_MS))

    def health(self) -> InputHealth:
        """The port's counters for the heartbeat (latency: recent p50, and histograms)."""
        lat = sorted(self.latency_ms)
        p50 = lat[len(lat) // 2] if lat else None
        return InputHealth(count=self.count, errors=self.errors, dead=self.dead, latency_ms=p50,
                           reclaimed=self.reclaimed,
                           latency_buckets=self.latency_ms.cumulative(),
                           latency_sum_ms=round(self.latency_ms.sum_ms, 3),
                           handler_buckets=self.handler_ms.cumulative(),
                           handler_sum_ms=round(self.handler_ms.sum_ms, 3),
                           e2e_buckets=self.e2e_ms.cumulative(),
                           e2e_sum_ms=round(self.e2e_ms.sum_ms, 3))


def flush_counts(client: redis.Redis, graph: str, context: AgentContext) -> None:
    """Add what the agent counted (``context.count``) since the last flush to the line
    counters, in one round trip; kept for the next flush when the broker is away."""
    taken = context.line_counts.take()
    if not taken:
        return
    try:
        with broker_unavailable_as(f"write line counters of graph {graph!r}"):
            pipe = client.pipeline(transaction=False)
            for name, amount in taken.items():
                pipe.hincrby(line_counters_key(graph), name, amount)
            pipe.execute()
    except BrokerUnavailable:
        context.line_counts.give_back(taken)
        raise


@dataclass
class HeartbeatSource:
    """Who the heartbeat is about, and where its counters come from."""

    graph: str
    agent: str
    replica: int
    replicas: int
    timeout_s: float
    inputs: Mapping[str, PortStats]
    blocked_s: Callable[[str], float]


class HeartbeatThread(threading.Thread):
    """Writes the replica's heartbeat every ``period_s`` until ``stop`` is set."""

    def __init__(self, client: redis.Redis, about: HeartbeatSource, binding: AgentBinding,
                 stop: threading.Event, period_s: float = DEFAULT_HEARTBEAT_S) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.client = client
        self.about = about
        self.binding = binding
        self.stop = stop
        self.period_s = period_s
        self.started = time.time()
        self.host = socket.gethostname()
        self.restarts = load_settings().restarts

    def beat(self) -> Heartbeat:
        """The heartbeat as of now."""
        a = self.about
        return Heartbeat(
            graph=a.graph, agent=a.agent, replica=a.replica, replicas=a.replicas,
            pid=os.getpid(), host=self.host, started=self.started, ts=time.time(),
            restarts=self.restarts,
            inputs={p: s.health() for p, s in a.inputs.items()},
            outputs={p: OutputHealth(count=b.sent, blocked_s=round(a.blocked_s(p), 3))
                     for p, b in self.binding.outputs.items()},
        )

    def run(self) -> None:
        """Write a heartbeat at once, then each period, withholding it while stalled.

        Each period also adds the agent's counts (``context.count``) to the line counters;
        a last time when stopped.
        """
        context = self.binding.agent.context
        with contextlib.suppress(BrokerUnavailable):
            write_heartbeat(self.client, self.beat(), self.period_s)
        while not self.stop.wait(self.period_s):
            with contextlib.suppress(BrokerUnavailable):
                flush_counts(self.client, self.about.graph, context)
            idle = time.monotonic() - self.binding.last_tick
            if idle > self.about.timeout_s:
                log.error("no progress for %.0fs: withholding heartbeat", idle)
                continue
            with contextlib.suppress(BrokerUnavailable):
                write_heartbeat(self.client, self.beat(), self.period_s)
        with contextlib.suppress(BrokerUnavailable):
            flush_counts(self.client, self.about.graph, context)
