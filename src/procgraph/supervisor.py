"""The supervisor: runs a line's replicas, restarts what dies, owns the line while it runs.

The brokers it starts and watches are kept by :class:`procgraph.linebrokers.LineBrokers`;
the guard that ends everything if the supervisor dies is :mod:`procgraph.guard`; the lease and
lock that make it the line's one owner are :mod:`procgraph.lease`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import redis

from procgraph import runs
from procgraph.brokers import EmbeddedBroker
from procgraph.console import Console, install_stop_signals, read_lines
from procgraph.constants import (
    BROKERS_ENV,
    LOG_LEVEL_ENV,
    RESTARTS_ENV,
    SHM_KEYS_ENV,
    SUPERVISED_ENV,
    stopping_key,
)
from procgraph.delivery.shmfiles import clean_line_rings, rings_still_needed
from procgraph.durability import graph_state_dir
from procgraph.errors import TRANSIENT_ERRORS, BrokerUnavailable
from procgraph.graph import AgentPlan, GraphPlan
from procgraph.guard import Guard
from procgraph.health import clear_heartbeat, read_heartbeats
from procgraph.lease import RENEW_EVERY_S, Holder, Lease, LocalLock
from procgraph.linebrokers import LineBrokers
from procgraph.linelogs import CONSOLE_LEVEL, LineLogs
from procgraph.linesummary import parts_by_outcome, parts_line, ready_banner
from procgraph.logfiles import LogFiles, log_dir
from procgraph.replicas import (
    DockerLauncher,
    ForkedHandle,
    LaunchError,
    ProcessHandle,
    ReplicaHandle,
)
from procgraph.transport.shmring import LINE_KEY_PREFIX

if TYPE_CHECKING:
    from procgraph.forkserver import ForkServer
    from procgraph.metrics import MetricsServer

log = logging.getLogger("procgraph.supervisor")
RESTART_MAX_S = 30.0
STABLE_S = 30.0
#: how long a replica that is ending by itself (its stopping marker set) may take to exit
EXIT_GRACE_S = 10.0
#: how long the stop waits for a replica killed (SIGKILL) after its grace, then goes on
KILL_WAIT_S = 10.0
#: how long ``run`` waits at start for a broker it does not start itself
CONNECT_TIMEOUT_S = 10.0
#: a line not ready (every replica's first heartbeat) after this long is said to be slow
READY_WARN_S = 30.0
#: the longest line read from a replica (its log records carry their traceback)
PUMP_LINE_LIMIT = 64 * 1024
_DOWN: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, redis.RedisError)


@dataclass
class Replica:
    """One replica of an agent (a process or a container: procgraph.replicas), and its
    restart bookkeeping. A :class:`subprocess.Popen` given as ``proc`` is wrapped."""

    agent: AgentPlan
    index: int
    proc: ReplicaHandle | None = None
    restarts: int = 0
    failures_in_row: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    heartbeat_seen: bool = False
    finished: bool = False
    exiting_since: float | None = None
    pump: threading.Thread | None = field(default=None, repr=False)
    #: seconds from the start of the current process or container to its first heartbeat
    first_heartbeat_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.proc, subprocess.Popen):
            self.proc = ProcessHandle(self.proc)

    @property
    def name(self) -> str:
        """``agent[i]``, as shown in log prefixes."""
        return f"{self.agent.name}[{self.index}]"

    @property
    def pid(self) -> int | None:
        """The process id (a container's init on this host), while running."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


class Supervisor:
    """Runs a validated graph (or the part placed on one node) until stopped."""

    #: fork process replicas from a fork server (procgraph.forkserver); None: unless
    #: ``PROCGRAPH_FORKSERVER=0`` says otherwise
    use_fork_server: bool | None = None
    _forks: ForkServer | None = None

    def __init__(
        self,
        plan: GraphPlan,
        node: str | None = None,
        redis_url: str | None = None,
        out: IO[str] | None = None,
        colour: bool | None = None,
        broker_kind: str = "valkey",
        state_dir: str | os.PathLike[str] | None = None,
        log_level: str = "info",
        console_level: str = CONSOLE_LEVEL,
    ) -> None:
        self.plan = plan
        self.node = node
        self.redis_url = redis_url
        self.console = Console(out, colour)
        self.out = self.console.out
        self.colour = self.console.colour
        self.broker_kind = broker_kind
        self.state_dir = state_dir
        #: the level replicas log at, unless their agent gives ``log_level``
        self.log_level = log_level.lower()
        self.log_dir = log_dir(plan, state_dir)
        self.logs = LineLogs(
            self.console,
            LogFiles(self.log_dir, int(plan.logs.max_mb * 1024 * 1024), plan.logs.keep),
            plan.name, console_level,
            "supervisor" if node is None else f"supervisor.{node}")
        self._started_at = 0.0
        self._ready_said = False
        self._slow_said = False
        self.replicas: list[Replica] = []
        self.stopping = threading.Event()
        self.stop_reason: str | None = None
        self.guard = Guard()
        self.line = LineBrokers(plan, lambda line: self.say("supervisor", line), self.guard,
                                node, redis_url, broker_kind, state_dir)
        self.holder = Holder.me(plan.file, node)
        self._lock: LocalLock | None = None
        self._lease: Lease | None = None
        self._next_renew = 0.0
        self._host = socket.gethostname()
        self._shut = False
        #: the Prometheus endpoint (procgraph.metrics), once started
        self.metrics: MetricsServer | None = None
        #: this line's run record (procgraph.runs), written once the line is taken
        self.run_record = runs.record_path(graph_state_dir(plan.name, state_dir), node)
        self._record_written = False

    # -- output ---------------------------------------------------------------------------
    def say(self, prefix: str, line: str, colour_index: int = 0) -> None:
        """Print one line with a (coloured) prefix, and file it in the supervisor's log."""
        self.logs.say(prefix, line, colour_index)

    # -- stopping -------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop the line (idempotent; the first reason is said once). Not for signal handlers:
        :meth:`handle_signals` installs signal-safe ones."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.say("supervisor", f"{reason}: stopping")
        self.stopping.set()

    def handle_signals(self) -> None:
        """SIGINT, SIGTERM and SIGHUP stop the line; call from the main thread.

        Signal-safe (:func:`procgraph.console.install_stop_signals`: no lock, no printing in
        the handler); any number of signals, in any order, stop it once.
        """
        install_stop_signals(self.request_stop)

    # -- brokers (procgraph.linebrokers) -------------------------------------------------
    @property
    def brokers(self) -> dict[str, EmbeddedBroker]:
        """The embedded brokers this supervisor started, by name."""
        return self.line.brokers

    @property
    def urls(self) -> dict[str, str]:
        """Every broker's URL, by name."""
        return self.line.urls

    def start_brokers(self) -> None:
        """Start the embedded brokers this node owns; resolve and mark every broker."""
        self.line.start()

    def wait_for_brokers(self, timeout_s: float) -> None:
        """Wait until every broker answers PING; BrokerUnavailable after ``timeout_s``."""
        self.line.wait_reachable(timeout_s, self.stopping, lambda: self.stop_reason)

    def _client(self, broker: str) -> redis.Redis:
        return self.line.client(broker)

    # -- replicas -------------------------------------------------------------------------
    def command(self, replica: Replica) -> list[str]:
        """The replica's command line; ``ps`` shows graph, agent and replica."""
        return [sys.executable, "-m", "procgraph", "agent", self.plan.file,
                replica.agent.name, str(replica.index)]

    def _docker(self) -> DockerLauncher:
        """The container launcher (procgraph.replicas), made at the first container."""
        launcher: DockerLauncher | None = getattr(self, "_launcher", None)
        if launcher is None:
            launcher = self._launcher = DockerLauncher(self.plan, self.node)
        return launcher

    def _start_forks(self) -> None:
        """Start the line's fork server (procgraph.forkserver) when process replicas run
        here and it is not turned off; it imports while the brokers start."""
        from procgraph import forkserver

        wanted = self.use_fork_server if self.use_fork_server is not None \
            else forkserver.enabled()
        agents = [a for a in self.plan.agents_on(self.node)
                  if (a.runtime or "process") == "process"]
        if not wanted or not agents or self._forks is not None:
            return
        pad = max(len(a.name) for a in agents) + 16
        try:
            self._forks = forkserver.ForkServer(
                self.plan.file, dict(os.environ), lambda line: self.say("supervisor", line),
                pad)
        except OSError as exc:
            self.say("supervisor", f"warning: cannot start the fork server: "
                     f"{exc.strerror or exc}; replicas are started as new processes")
            return
        self.guard.watch(self._forks.pid)

    def _stop_forks(self, why: str | None = None) -> None:
        """Stop the fork server; with ``why``, say that replicas are spawned from now on."""
        forks, self._forks = self._forks, None
        if forks is None:
            return
        if why is not None:
            self.say("supervisor", f"warning: the fork server (pid {forks.pid}) {why}; "
                     "replicas are started as new processes from now on (slower start)")
        forks.close()
        self.guard.forget(forks.pid)

    def _start_process(self, replica: Replica, env: dict[str, str]) -> ReplicaHandle:
        """The replica as a process: forked by the fork server, else spawned."""
        from procgraph.forkserver import ForkServerGone

        if self._forks is not None:
            try:
                return ForkedHandle(self._forks.spawn(replica.agent.name, replica.index,
                                                      self.command(replica), env))
            except ForkServerGone as exc:
                self._stop_forks(f"cannot start {replica.name}: {exc}")
        return ProcessHandle.start(self.command(replica), env)

    def _spawn(self, replica: Replica) -> None:
        """Start the replica as a process, or as a container (``runtime: docker``).

        A container that cannot be started at the line's start raises LaunchError; on a
        restart it is said, and tried again after the backoff.
        """
        env = dict(os.environ)
        env[BROKERS_ENV] = json.dumps(self.urls)
        env[SHM_KEYS_ENV] = json.dumps(self._shm_keys())
        env[SUPERVISED_ENV] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env[RESTARTS_ENV] = str(replica.restarts)
        env[LOG_LEVEL_ENV] = replica.agent.log_level or self.log_level
        if (replica.agent.runtime or "process") == "docker":
            try:
                replica.proc = self._docker().launch(replica.agent, replica.index,
                                                     replica.restarts, env, self.urls)
            except LaunchError as exc:
                if replica.restarts == 0:
                    raise
                replica.failures_in_row += 1
                delay = min(RESTART_MAX_S, 0.5 * 2 ** max(0, replica.failures_in_row - 1))
                replica.next_start = time.monotonic() + delay
                self.say("supervisor", f"error: {exc}; trying again in {delay:.1f}s")
                return
        else:
            replica.proc = self._start_process(replica, env)
        if replica.proc.pid:
            self.guard.watch(replica.proc.pid)
        self.logs.files.write(replica.name, "INFO", f"procgraph.supervisor: started (pid "
                              f"{replica.proc.pid}, restart {replica.restarts})")
        replica.started_at = time.monotonic()
        replica.heartbeat_seen = False
        replica.first_heartbeat_s = None
        replica.exiting_since = None
        colour = list(self.plan.agents).index(replica.agent.name)
        replica.pump = threading.Thread(
            target=self._pump, args=(replica, replica.proc, colour), daemon=True)
        replica.pump.start()

    def _pump(self, replica: Replica, proc: ReplicaHandle, colour: int) -> None:
        """File a replica's output (a process's pipe, a container's log stream) and show what
        matters (procgraph.linelogs), each line escaped and capped (console.read_lines)."""
        assert proc.stdout is not None
        for line in read_lines(proc.stdout, PUMP_LINE_LIMIT):
            self.logs.replica_line(replica.name, replica.agent.name, line, colour)
        proc.stdout.close()

    def create_groups(self) -> None:
        """Create every consumer group before any producer starts, so none misses entries."""
        from procgraph.transport import GroupReader, ReadSpec, retry

        here = {a.name for a in self.plan.agents_on(self.node)}
        for agent in self.plan.agents.values():
            specs: dict[str, list[ReadSpec]] = {}
            for inp in agent.inputs:
                if agent.name not in here and inp.source.split(".")[0] not in here:
                    continue  # neither end on this node: the node of either end creates it
                specs.setdefault(inp.broker, []).append(
                    ReadSpec(inp.stream, agent.name, inp.port, inp.start))
            for broker, group_specs in specs.items():
                reader = GroupReader(self._client(broker), group_specs, "", self.stopping)
                retry(reader.ensure_groups, f"create groups on broker {broker!r}", self.stopping)

    def start(self, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        """Take the line, start brokers, create consumer groups, start every replica here.

        Raises :class:`procgraph.lease.LineHeld` when another supervisor runs the line,
        BrokerUnavailable when a broker cannot be reached within ``connect_timeout_s``, and
        InterruptedError when stopped meanwhile.
        """
        if self.line.starts_any():
            self._lock = LocalLock(graph_state_dir(self.plan.name, self.state_dir),
                                   self.plan.name, self.holder)
            self._lock.acquire()
        # the guard holds the lock too: after a kill -9 of this process, no new run starts
        # on our broker's data until the guard has ended the broker
        self.guard.start(() if self._lock is None else (self._lock.fileno(),))
        self._start_forks()
        self.start_brokers()
        self.line.guard_processes()
        self.wait_for_brokers(connect_timeout_s)
        self._lease = Lease(self.plan.name, self.holder,
                            {name: self._client(name) for name in self.line.used_here()})
        self._lease.acquire()
        self._next_renew = time.monotonic() + RENEW_EVERY_S
        self._write_run_record()
        self.create_groups()
        # stale shared-memory rings (only this line's: named by its brokers' locations)
        clean_line_rings(self.plan, self.node, stopping=False, urls=self._shm_names())
        self._parts_at_start = self._parts_counted()
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
        self._start_metrics()
        self._started_at = time.monotonic()
        self.say("supervisor", f"graph {self.plan.name!r}: {len(self.replicas)} replica(s) of "
                 f"{len(agents)} agent(s) started; logs in {self.log_dir}")
        if self.metrics is not None:
            self.say("supervisor", f"metrics at {self.metrics.url}")
        self._set_run_state("started")

    # -- the ready banner -------------------------------------------------------------------
    def _check_ready(self, now: float) -> None:
        """Say once when every replica here has sent its first heartbeat (the ready banner),
        or once that some have not after READY_WARN_S."""
        if self._ready_said or not self.replicas:
            return
        waiting = [r.name for r in self.replicas if not r.heartbeat_seen and not r.finished]
        if not waiting:
            self._ready_said = True
            for line in self.banner(now - self._started_at):
                self.say("supervisor", line)
        elif not self._slow_said and now - self._started_at > READY_WARN_S:
            self._slow_said = True
            self.say("supervisor", f"warning: not ready after {READY_WARN_S:g}s: no heartbeat "
                     f"yet from {', '.join(waiting)}; see procgraph logs {self.plan.name}")

    def banner(self, took_s: float) -> list[str]:
        """The ready banner (procgraph.linesummary.ready_banner)."""
        return ready_banner(self.plan, self.node, len(self.replicas), took_s, self.urls,
                            set(self.brokers), self.broker_kind,
                            self.metrics.url if self.metrics is not None else None,
                            self.log_dir)

    def _parts_counted(self) -> dict[str, int] | None:
        return parts_by_outcome({name: self._client(name) for name in self.urls},
                                self.plan.name)

    def _say_parts(self) -> None:
        """At the end of a run without --node: the parts this run counted, by outcome."""
        before = getattr(self, "_parts_at_start", None)
        if self.node is not None or before is None:
            return
        after = self._parts_counted()
        line = parts_line(before, after) if after is not None else None
        if line is not None:
            self.say("supervisor", line)

    def _write_run_record(self) -> None:
        """Write this line's run record (procgraph.runs); a failure only warns."""
        try:
            runs.write_record(
                self.run_record, graph=self.plan.name,
                file=str(Path(self.plan.file).resolve()), pid=os.getpid(), host=self._host,
                node=self.node, started=time.time(), brokers=dict(self.urls),
                hmi_url=runs.hmi_url(self.plan, self.node), metrics_url=None,
                log_dir=str(self.log_dir), state="starting")
            self._record_written = True
        except OSError as exc:
            self.say("supervisor", f"warning: cannot write the run record {self.run_record}: "
                     f"{exc}; procgraph ps/stop will not find this line")

    def _set_run_state(self, state: str) -> None:
        if self._record_written:
            with contextlib.suppress(OSError):
                runs.update_record(self.run_record, state=state)

    def _start_metrics(self) -> None:
        """Serve the line's Prometheus metrics (graph ``metrics:``); a failure only warns."""
        from procgraph.metrics import LineCollector, MetricsServer

        spec = self.plan.metrics
        if not spec.enabled or self.metrics is not None:
            return
        collector = LineCollector(
            self.plan, {name: self._client(name) for name in self.urls},
            lambda: {(r.agent.name, r.index): r.restarts for r in list(self.replicas)},
            self.node)
        try:
            self.metrics = MetricsServer(collector, spec.host, spec.port)
        except OSError as exc:
            self.say("supervisor", f"warning: cannot serve metrics on {spec.host}:{spec.port}: "
                     f"{exc.strerror or exc}; give another metrics: {{port: N}} in the graph")
            return
        if self._record_written:
            with contextlib.suppress(OSError):
                runs.update_record(self.run_record, metrics_url=self.metrics.url)

    def _stop_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

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
                assert r.proc is not None
                beat = beats.get((r.agent.name, r.index))
                if beat is not None and r.proc.owns(beat, self._host):
                    if not r.heartbeat_seen:  # only this process's own heartbeat counts
                        r.first_heartbeat_s = time.monotonic() - r.started_at
                        if not isinstance(r.proc, ProcessHandle | ForkedHandle):
                            self.say("supervisor", f"{r.name}: {r.proc.describe()}: first "
                                     f"heartbeat {r.first_heartbeat_s:.1f}s after its start")
                    r.heartbeat_seen = True
                elif r.heartbeat_seen and not self._exiting(broker, r):
                    self.say("supervisor", f"{r.name}: heartbeat stopped; killing "
                             f"{r.proc.describe()} to restart it")
                    r.proc.kill()

    def _exiting(self, broker: str, r: Replica) -> bool:
        """True while ``r`` is ending by itself (its stopping marker names its pid)."""
        assert r.proc is not None
        if r.exiting_since is None:
            try:
                marker = self._client(broker).get(
                    stopping_key(self.plan.name, r.agent.name, r.index))
            except _DOWN:
                return True  # cannot tell now: judge again at the next poll
            if marker is None or marker != str(r.proc.agent_pid).encode():
                return False
            r.exiting_since = time.monotonic()
        if time.monotonic() - r.exiting_since < EXIT_GRACE_S:
            return True
        self.say("supervisor", f"{r.name} did not exit within {EXIT_GRACE_S:g}s of stopping")
        return False

    def _forget(self, r: Replica, pid: int) -> None:
        """A replica ended: unguard it; clear its heartbeat and marker if still its; remove
        its container."""
        handle = r.proc if r.proc is not None and r.proc.pid == pid else None
        if pid:
            self.guard.forget(pid)
        client = self._client(r.agent.broker)
        with contextlib.suppress(BrokerUnavailable, *_DOWN):
            beat = read_heartbeats(client, self.plan.name, [(r.agent.name, r.index)]).get(
                (r.agent.name, r.index))
            own = (handle.owns(beat, self._host) if handle is not None
                   else beat.pid == pid and beat.host in ('', self._host)) \
                if beat is not None else False
            if own:
                clear_heartbeat(client, self.plan.name, r.agent.name, r.index)
            client.delete(stopping_key(self.plan.name, r.agent.name, r.index))
        if handle is not None:
            handle.release()

    def _renew_lease(self, now: float) -> None:
        if self._lease is None or now < self._next_renew:
            return
        self._next_renew = now + RENEW_EVERY_S
        try:
            lost = self._lease.renew()
        except BrokerUnavailable:
            return  # it is renewed when the broker is back (or taken again if it expired)
        for name, holder in lost:
            who = holder.describe() if holder is not None else "another process"
            self.say("supervisor", f"error: the lease of this line in broker {name!r} is held "
                     f"by {who}; stopping this supervisor")
            self.request_stop("lease lost")

    def poll(self) -> None:
        """One supervision step: reap, restart, check heartbeats and brokers."""
        now = time.monotonic()
        self.line.check()
        for r in self.replicas:
            if r.proc is not None and r.proc.poll() is not None:
                code = r.proc.returncode
                ran = now - r.started_at
                self._forget(r, r.proc.pid)
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
        self.line.guard_processes()
        self._check_heartbeats()
        self._check_ready(now)
        self._renew_lease(now)

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

    def run(self, duration_s: float | None = None,
            connect_timeout_s: float = CONNECT_TIMEOUT_S) -> int:
        """Start everything and supervise until stopped or ``duration_s`` passes.

        ``duration_s`` also bounds the start (while brokers are waited for); once every
        replica is started, the line runs for ``duration_s`` from then.
        Raises what :meth:`start` raises (LineHeld, BrokerUnavailable), after cleaning up.
        """
        timer: threading.Timer | None = None

        def reached() -> None:
            self.say("supervisor", f"--duration {duration_s:g}s reached")
            self.stop_reason = self.stop_reason or "duration"
            self.stopping.set()

        def arm() -> threading.Timer | None:
            if duration_s is None:
                return None
            armed = threading.Timer(duration_s, reached)
            armed.daemon = True
            armed.start()
            return armed

        timer = arm()  # bounds the start (a broker that does not answer) ...
        try:
            try:
                self.start(connect_timeout_s)
            except InterruptedError:
                return 0
            if timer is not None and not self.stopping.is_set():
                timer.cancel()  # ... then the line runs for the whole duration
                timer = arm()
            while not self.stopping.is_set():
                self.poll()
                self.stopping.wait(0.2)
        finally:
            if timer is not None:
                timer.cancel()
            self.shutdown()
        return 0

    def _shm_keys(self) -> dict[str, str]:
        """The line keys of the embedded brokers this supervisor owns: shared-memory files
        are named after the line's state folder, not the port, which changes each run."""
        folder = graph_state_dir(self.plan.name, self.state_dir)
        return {name: f"{LINE_KEY_PREFIX}{folder}:{name}" for name in self.line.brokers}

    def _shm_names(self) -> dict[str, str]:
        """What names each broker in shared-memory file names (keys, else URLs)."""
        return {**self.line.urls, **self._shm_keys()}

    def _clean_rings_at_stop(self) -> None:
        """Remove the shared-memory rings of this node's producers, but those whose frames
        a reader has not read or acknowledged yet (a durable broker hands them out again
        after the restart, and the restarted producer keeps honouring their slots)."""
        try:
            needed = rings_still_needed(self.plan, self.node, self.line.client,
                                        self._shm_names())
        except Exception as exc:  # the broker is gone: nothing can be read again from it
            log.debug("rings: could not ask the brokers (%s); removing them", exc)
            needed = set()
        clean_line_rings(self.plan, self.node, stopping=True, keep=needed,
                         urls=self._shm_names())
        if needed:
            self.say("supervisor", f"kept {len(needed)} shared-memory ring(s) in /dev/shm: "
                     "frames in them are not read yet (the next run reads them)")

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop replicas (SIGTERM, then SIGKILL after ``grace_s``), then brokers (once)."""
        self.stopping.set()
        if self._shut:
            return
        self._shut = True
        self._stop_metrics()
        self._set_run_state("stopping")
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
                try:
                    r.proc.wait(KILL_WAIT_S)
                except subprocess.TimeoutExpired:  # never hang the stop on one process
                    self.say("supervisor", f"{r.name} (pid {r.proc.pid}) has not ended "
                             f"{KILL_WAIT_S:g}s after SIGKILL; left to the system")
        for r in self.replicas:
            if r.pump is not None:
                r.pump.join(timeout=2)
        for r in live:
            assert r.proc is not None
            self._forget(r, r.proc.pid)
        self._stop_forks()
        self._clean_rings_at_stop()
        launcher: DockerLauncher | None = getattr(self, "_launcher", None)
        if launcher is not None:
            launcher.close()
        self._say_parts()
        if self._lease is not None:
            self._lease.release()
        for client in self.line.clients.values():
            client.close()
        for name, broker in self.brokers.items():
            broker.close()
            self.say("supervisor", f"broker {name!r} stopped")
        self.brokers.clear()
        if self._record_written:
            runs.remove_record(self.run_record)
        if self._lock is not None:
            self._lock.release()
        self.guard.close()
        self.logs.close()
