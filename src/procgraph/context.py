"""AgentContext: what the framework tells an agent about where it runs."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from procgraph.registry import ModelRegistry


#: the longest name ``AgentContext.count`` takes
COUNT_NAME_MAX = 100


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota.

    A container limited with ``--cpus 1.5`` counts 2 (the quota rounded up); never below 1.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


class LineCounts:
    """What an agent counted with ``context.count``: kept in memory, taken by the runtime.

    The runtime's heartbeat thread takes what was counted since its last look once a period
    and adds it to the line counters (one round trip). Counts made during a handler attempt
    are held until the attempt commits (``end_attempt(keep=True)``, or :meth:`release` once the
    outputs written behind the handler are in the broker) and dropped when it raised or its
    outputs could not be written, so a handler handled again does not count twice. ``total``
    is everything counted (and kept) since the replica started: what a test reads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, int] = {}
        self._attempt: dict[str, int] | None = None
        self.total: dict[str, int] = {}

    def add(self, name: str, amount: int) -> None:
        """Count ``amount`` more under ``name`` (held back while an attempt is open)."""
        with self._lock:
            into = self._attempt if self._attempt is not None else self._ready
            into[name] = into.get(name, 0) + amount
            if self._attempt is None:
                self.total[name] = self.total.get(name, 0) + amount

    def begin_attempt(self) -> None:
        """A handler attempt starts: what it counts waits for ``end_attempt``."""
        with self._lock:
            self._attempt = {}

    def end_attempt(self, keep: bool) -> dict[str, int]:
        """The attempt committed (``keep``: release what it counted) or not (hold it back);
        returns what it counted, for :meth:`release` once its outputs are written."""
        with self._lock:
            held, self._attempt = self._attempt or {}, None
        if keep:
            self.release(held)
        return held

    def release(self, counted: dict[str, int]) -> None:
        """Add what a committed attempt counted to the line counters."""
        with self._lock:
            for name, n in counted.items():
                self._ready[name] = self._ready.get(name, 0) + n
                self.total[name] = self.total.get(name, 0) + n

    def take(self) -> dict[str, int]:
        """Everything ready since the last ``take`` (and forget it)."""
        with self._lock:
            out, self._ready = self._ready, {}
        return {k: v for k, v in out.items() if v}

    def give_back(self, taken: dict[str, int]) -> None:
        """Put back what ``take`` returned (it could not be written)."""
        with self._lock:
            for name, n in taken.items():
                self._ready[name] = self._ready.get(name, 0) + n


@dataclass
class AgentContext:
    """Where an agent runs: its graph, name, replica, folder, and its broker.

    ``graph``, ``agent`` and ``replica`` name it; ``consumer`` is its consumer name in its
    input groups; ``resolve_path(p)`` finds a file named in params relative to the graph file;
    ``models`` is the model registry on the agent's broker; ``redis()`` is a raw client of
    that broker (an escape hatch: prefer ``self.state``, ``models`` and ``procgraph.health``).
    ``count(name)`` adds to a counter of the whole line (e.g. ``parts:ok``).

    Where it runs, for sizing thread pools: ``cpus`` is how many CPUs this process may use
    (:func:`usable_cpus`), ``replicas_on_node`` how many replicas of all the graph's agents
    the plan places on this agent's node (this one included) and ``class_replicas_on_node``
    how many of them run this agent's class. Outside a graph (tests, ``run_agent``) both
    counts are 1.
    """

    graph: str = "test"
    agent: str = "agent"
    replica: int = 0
    graph_dir: Path = field(default_factory=Path.cwd)
    redis_factory: Callable[[], redis.Redis] | None = None
    cpus: int = field(default_factory=usable_cpus)
    replicas_on_node: int = 1
    class_replicas_on_node: int = 1
    _models: ModelRegistry | None = field(default=None, init=False, repr=False, compare=False)
    #: what ``count`` counted, for the runtime to write (see :class:`LineCounts`)
    line_counts: LineCounts = field(default_factory=LineCounts, init=False, repr=False,
                                    compare=False)

    @property
    def consumer(self) -> str:
        """Consumer name of this replica in its consumer groups."""
        return f"{self.agent}-{self.replica}"

    def redis(self) -> redis.Redis:
        """A client for this agent's broker (an escape hatch; RuntimeError without one)."""
        if self.redis_factory is None:
            raise RuntimeError("this agent runs without a broker")
        return self.redis_factory()

    @property
    def models(self) -> ModelRegistry:
        """The model registry on this agent's broker (made on first use)."""
        if self._models is None:
            from procgraph.registry import ModelRegistry

            self._models = ModelRegistry(self.redis())
        return self._models

    def resolve_path(self, path: str | Path) -> Path:
        """A path from params, relative to the graph file's folder unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.graph_dir / p)

    def count(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to the line counter ``name``, shared by every agent of the line.

        Cheap: counted in memory and written to the broker about once a second by the
        runtime (no broker call here); what a handler attempt that raised counted is
        dropped. The supervisor's Prometheus endpoint exports counters named
        ``parts:<outcome>`` as ``procgraph_parts_total{outcome=...}`` and the others as
        ``procgraph_line_events_total{counter=...}``; ``procgraph.health.read_line_counters``
        reads them. ``name``: 1 to 100 printable characters; ``amount``: >= 0.
        """
        if not isinstance(name, str) or not 0 < len(name) <= COUNT_NAME_MAX \
                or not name.isprintable():
            raise ValueError(f"count: name must be 1 to {COUNT_NAME_MAX} printable characters,"
                             f" got {name!r:.120}")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ValueError(f"count: amount must be an int >= 0, got {amount!r:.40}")
        self.line_counts.add(name, amount)

    @property
    def counts(self) -> dict[str, int]:
        """Everything this replica counted with ``count`` since it started, by name."""
        return dict(self.line_counts.total)
