"""The heartbeat: a replica says it is alive and making progress, about once a second.

A thread writes a :class:`procgraph.health.Heartbeat` with
:func:`procgraph.health.write_heartbeat` every period into an expiring key. While the agent
shows no progress for ``timeout_s`` (a handler or source loop stuck), the heartbeat is
withheld, so it expires and the supervisor restarts the replica. A clean stop clears it.
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
from procgraph.constants import DEFAULT_HEARTBEAT_S
from procgraph.errors import BrokerUnavailable
from procgraph.health import (
    LATENCY_BUCKETS_MS,
    Heartbeat,
    InputHealth,
    OutputHealth,
    write_heartbeat,
)
from procgraph.settings import load_settings

log = logging.getLogger("procgraph.runtime")


class LatencyWindow(deque[float]):
    """The recent latencies (ms, for the p50), and a histogram of all since the start.

    Each ``append`` also counts the value in its bucket of
    :data:`procgraph.health.LATENCY_BUCKETS_MS` (one bisect: cheap on the hot path).
    """

    def __init__(self, maxlen: int = 200) -> None:
        super().__init__(maxlen=maxlen)
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.sum_ms = 0.0

    def append(self, value: float) -> None:
        """Keep ``value`` in the window and count it in the histogram."""
        super().append(value)
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, value)] += 1
        self.sum_ms += value

    def cumulative(self) -> list[int]:
        """Counts <= each bound, then the total (Prometheus' cumulative buckets)."""
        out, total = [], 0
        for n in self.buckets:
            total += n
            out.append(total)
        return out


@dataclass
class PortStats:
    """Counters of one input port, published with the heartbeat."""

    count: int = 0
    errors: int = 0
    dead: int = 0
    reclaimed: int = 0
    latency_ms: LatencyWindow = field(default_factory=LatencyWindow)

    def health(self) -> InputHealth:
        """The port's counters for the heartbeat (latency: recent p50, and a histogram)."""
        lat = sorted(self.latency_ms)
        p50 = lat[len(lat) // 2] if lat else None
        return InputHealth(count=self.count, errors=self.errors, dead=self.dead, latency_ms=p50,
                           reclaimed=self.reclaimed,
                           latency_buckets=self.latency_ms.cumulative(),
                           latency_sum_ms=round(self.latency_ms.sum_ms, 3))


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
        """Write a heartbeat at once, then each period, withholding it while stalled."""
        with contextlib.suppress(BrokerUnavailable):
            write_heartbeat(self.client, self.beat(), self.period_s)
        while not self.stop.wait(self.period_s):
            idle = time.monotonic() - self.binding.last_tick
            if idle > self.about.timeout_s:
                log.error("no progress for %.0fs: withholding heartbeat", idle)
                continue
            with contextlib.suppress(BrokerUnavailable):
                write_heartbeat(self.client, self.beat(), self.period_s)
