"""The supervisor: starts owned brokers and every agent replica, restarts what dies."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO

import redis

from procgraph.brokers import EmbeddedBroker, resolve_broker_urls
from procgraph.constants import BROKERS_ENV, RESTARTS_ENV, SUPERVISED_ENV
from procgraph.errors import BrokerUnavailable
from procgraph.graph import AgentPlan, BrokerSpec, GraphPlan
from procgraph.health import read_heartbeats

log = logging.getLogger("procgraph.supervisor")
_COLOURS = [36, 33, 35, 32, 34, 91, 96, 93, 95, 92, 94]
RESTART_MAX_S = 30.0
STABLE_S = 30.0


@dataclass
class Replica:
    """One OS process running one replica of an agent, and its restart bookkeeping."""

    agent: AgentPlan
    index: int
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    failures_in_row: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    heartbeat_seen: bool = False
    finished: bool = False
    pump: threading.Thread | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """``agent[i]``, as shown in log prefixes."""
        return f"{self.agent.name}[{self.index}]"

    @property
    def pid(self) -> int | None:
        """The process id, while running."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


class Supervisor:
    """Runs a validated graph (or the part placed on one node) until stopped."""

    def __init__(
        self,
        plan: GraphPlan,
        node: str | None = None,
        redis_url: str | None = None,
        out: IO[str] | None = None,
        colour: bool | None = None,
        broker_kind: str = "valkey",
    ) -> None:
        self.plan = plan
        self.node = node
        self.redis_url = redis_url
        self.out = out or sys.stdout
        self.colour = self.out.isatty() if colour is None else colour
        self.broker_kind = broker_kind
        self.brokers: dict[str, EmbeddedBroker] = {}
        self.urls: dict[str, str] = {}
        self.replicas: list[Replica] = []
        self.stopping = threading.Event()
        self._print_lock = threading.Lock()
        self._clients: dict[str, redis.Redis] = {}

    # -- output ---------------------------------------------------------------------------
    def say(self, prefix: str, line: str, colour_index: int = 0) -> None:
        """Print one line with a (coloured) prefix."""
        if self.colour:
            code = _COLOURS[colour_index % len(_COLOURS)]
            text = f"\x1b[{code}m{prefix:>14} |\x1b[0m {line}"
        else:
            text = f"{prefix:>14} | {line}"
        with self._print_lock:
            print(text, file=self.out, flush=True)

    # -- brokers --------------------------------------------------------------------------
    def start_brokers(self) -> None:
        """Start embedded brokers this node owns; resolve every broker's URL."""
        self.urls = resolve_broker_urls(self.plan, self.redis_url, start=self._start_broker)

    def _start_broker(self, name: str, spec: BrokerSpec) -> str | None:
        """Start an embedded broker placed on this node (None: another node starts it)."""
        if self.node is not None and spec.node not in (None, self.node):
            return None
        broker = EmbeddedBroker(spec.host, spec.port, self.broker_kind).start()
        self.brokers[name] = broker
        self.say("supervisor", f"broker {name!r}: embedded {self.broker_kind} at {broker.url}")
        return broker.url

    def _check_brokers(self) -> None:
        for name, broker in self.brokers.items():
            if broker.proc is not None and broker.proc.poll() is not None:
                self.say("supervisor", f"broker {name!r} died; restarting on port {broker.port}")
                try:
                    broker.start()
                except Exception as exc:
                    self.say("supervisor", f"broker {name!r} restart failed: {exc}")

    # -- replicas -------------------------------------------------------------------------
    def command(self, replica: Replica) -> list[str]:
        """The replica's command line; ``ps`` shows graph, agent and replica."""
        return [sys.executable, "-m", "procgraph", "agent", self.plan.file,
                replica.agent.name, str(replica.index)]

    def _spawn(self, replica: Replica) -> None:
        env = dict(os.environ)
        env[BROKERS_ENV] = json.dumps(self.urls)
        env[SUPERVISED_ENV] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env[RESTARTS_ENV] = str(replica.restarts)
        replica.proc = subprocess.Popen(
            self.command(replica), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        replica.started_at = time.monotonic()
        replica.heartbeat_seen = False
        colour = list(self.plan.agents).index(replica.agent.name)
        replica.pump = threading.Thread(
            target=self._pump, args=(replica, replica.proc, colour), daemon=True)
        replica.pump.start()

    def _pump(self, replica: Replica, proc: subprocess.Popen[bytes], colour: int) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.say(replica.name, raw.decode(errors="replace").rstrip(), colour)
        proc.stdout.close()

    def create_groups(self) -> None:
        """Create every consumer group before any producer starts, so none misses entries."""
        from procgraph.transport import GroupReader, ReadSpec, retry

        for agent in self.plan.agents.values():
            specs: dict[str, list[ReadSpec]] = {}
            for inp in agent.inputs:
                specs.setdefault(inp.broker, []).append(
                    ReadSpec(inp.stream, agent.name, inp.port, inp.start))
            for broker, group_specs in specs.items():
                reader = GroupReader(self._client(broker), group_specs, "", self.stopping)
                retry(reader.ensure_groups, f"create groups on broker {broker!r}", self.stopping)

    def start(self) -> None:
        """Start brokers, create consumer groups, then start every replica on this node."""
        self.start_brokers()
        self.create_groups()
        agents = self.plan.agents_on(self.node)
        if self.node is not None:
            unplaced = [a.name for a in self.plan.agents.values() if a.node is None]
            if unplaced:
                self.say("supervisor", f"warning: agents without node: {', '.join(unplaced)} "
                         f"are not started with --node {self.node}; give them node: NAME")
        if not agents:
            self.say("supervisor", f"no agents placed on node {self.node!r}")
        for agent in agents:
            for i in range(agent.replicas):
                replica = Replica(agent, i)
                self.replicas.append(replica)
                self._spawn(replica)
        self.say("supervisor", f"graph {self.plan.name!r}: {len(self.replicas)} replica(s) of "
                 f"{len(agents)} agent(s) started")

    def _client(self, broker: str) -> redis.Redis:
        if broker not in self._clients:
            self._clients[broker] = redis.Redis.from_url(
                self.urls[broker], socket_connect_timeout=1, socket_timeout=2)
        return self._clients[broker]

    def _check_heartbeats(self) -> None:
        """Kill a running replica whose heartbeat was seen and then stopped (it hangs)."""
        by_broker: dict[str, list[Replica]] = {}
        for r in self.replicas:
            if r.pid is not None:
                by_broker.setdefault(r.agent.broker, []).append(r)
        for broker, reps in by_broker.items():
            try:
                beats = read_heartbeats(self._client(broker), self.plan.name,
                                        [(r.agent.name, r.index) for r in reps])
            except BrokerUnavailable:
                continue
            for r in reps:
                if (r.agent.name, r.index) in beats:
                    r.heartbeat_seen = True
                elif r.heartbeat_seen and r.proc is not None:
                    self.say("supervisor", f"{r.name}: heartbeat stopped; killing pid "
                             f"{r.proc.pid} to restart it")
                    r.proc.kill()

    def poll(self) -> None:
        """One supervision step: reap, restart, check heartbeats and brokers."""
        now = time.monotonic()
        self._check_brokers()
        for r in self.replicas:
            if r.proc is not None and r.proc.poll() is not None:
                code = r.proc.returncode
                ran = now - r.started_at
                r.proc = None
                if self.stopping.is_set():
                    continue
                policy = r.agent.restart
                if policy == "never" or (policy == "on-failure" and code == 0):
                    self.say("supervisor", f"{r.name} exited with code {code}; not restarting "
                             f"(restart: {policy})")
                    r.finished = True
                    continue
                r.failures_in_row = 0 if ran > STABLE_S else r.failures_in_row + 1
                delay = min(RESTART_MAX_S, 0.5 * 2 ** max(0, r.failures_in_row - 1))
                r.next_start = now + delay
                self.say("supervisor", f"{r.name} exited with code {code} after {ran:.1f}s; "
                         f"restarting in {delay:.1f}s")
            if r.proc is None and not r.finished and not self.stopping.is_set() \
                    and now >= r.next_start:
                r.restarts += 1
                self._spawn(r)
        self._check_heartbeats()

    def start_in_thread(self, interval_s: float = 0.1) -> None:
        """Start everything, then supervise from a background thread until ``shutdown()``.

        For tests, benchmarks and programs that embed a line; ``run()`` is the blocking form.
        """
        self.start()

        def loop() -> None:
            while not self.stopping.is_set():
                self.poll()
                self.stopping.wait(interval_s)

        self._thread = threading.Thread(target=loop, name="supervisor", daemon=True)
        self._thread.start()

    def run(self, duration_s: float | None = None) -> int:
        """Start everything and supervise until stopped or ``duration_s`` passes."""
        self.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self.stopping.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    self.say("supervisor", f"--duration {duration_s:g}s reached")
                    break
                self.poll()
                self.stopping.wait(0.2)
        finally:
            self.shutdown()
        return 0

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop replicas (SIGTERM, then SIGKILL after ``grace_s``), then brokers."""
        self.stopping.set()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        live = [r for r in self.replicas if r.pid is not None]
        if live:
            self.say("supervisor", f"stopping {len(live)} replica(s)")
        for r in live:
            assert r.proc is not None
            r.proc.terminate()
        deadline = time.monotonic() + grace_s
        for r in live:
            assert r.proc is not None
            try:
                r.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("supervisor", f"{r.name} did not stop in {grace_s:g}s; killing it")
                r.proc.kill()
                r.proc.wait()
        for r in self.replicas:
            if r.pump is not None:
                r.pump.join(timeout=2)
        for client in self._clients.values():
            client.close()
        for name, broker in self.brokers.items():
            broker.close()
            self.say("supervisor", f"broker {name!r} stopped")
        self.brokers.clear()
