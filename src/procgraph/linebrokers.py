"""The brokers of one running line, as its supervisor keeps them.

:class:`LineBrokers` resolves every broker's URL (:func:`procgraph.brokers.resolve_broker_urls`),
starts the embedded brokers this node owns (an AOF in the line's state folder unless
``persistence: none``), marks every broker with the line's epoch so that a broker that comes
back empty is said and counted (:mod:`procgraph.durability`), restarts an owned broker that
died on the same port with the same data, tells the guard (:mod:`procgraph.guard`) about each
broker process, and waits at start until every broker answers.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import redis

from procgraph.brokers import (
    EmbeddedBroker,
    is_loopback,
    password_file,
    resolve_broker_urls,
    stored_password,
)
from procgraph.constants import EMBEDDED
from procgraph.durability import EpochWatch, broker_data_dir
from procgraph.errors import TRANSIENT_ERRORS, BrokerUnavailable, refusal, refused
from procgraph.graph import BrokerSpec, GraphPlan
from procgraph.guard import BROKER, Guard
from procgraph.redact import redact_url

_DOWN: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, redis.RedisError)


class LineBrokers:
    """Every broker of one line on this node: URLs, owned processes, clients, epochs."""

    def __init__(
        self,
        plan: GraphPlan,
        say: Callable[[str], None],
        guard: Guard,
        node: str | None = None,
        redis_url: str | None = None,
        broker_kind: str = "valkey",
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.plan = plan
        self._say = say
        self.guard = guard
        self.node = node
        self.redis_url = redis_url
        self.broker_kind = broker_kind
        self.state_dir = state_dir
        #: the embedded brokers this node started, by name
        self.brokers: dict[str, EmbeddedBroker] = {}
        #: every broker's URL, by name
        self.urls: dict[str, str] = {}
        self.clients: dict[str, redis.Redis] = {}
        self._guarded: dict[str, int] = {}
        self._broker_retry: dict[str, float] = {}
        self._epochs = EpochWatch(plan.name, say)

    def start(self) -> None:
        """Start embedded brokers this node owns; resolve every broker's URL; mark each broker
        with the line's epoch (procgraph.durability) so that a later data loss is noticed."""
        self.urls = resolve_broker_urls(self.plan, self.redis_url, start=self._start_broker,
                                        state_dir=self.state_dir)
        for name, url in self.urls.items():
            owned = self.brokers.get(name)
            durable = owned is not None and owned.persistent
            self._epochs.add(name, url, owned=owned is not None,
                             data_dir=owned.dir if owned is not None and durable else None,
                             had_aof=bool(owned is not None and owned.found_aof),
                             node=self._node_of(name) if owned is None else None)
            if owned is not None:  # it answers now; the others are marked at their first check
                self._epochs.claim(name, self.client(name))

    def _node_of(self, name: str) -> str | None:
        """The node whose supervisor starts embedded broker ``name`` (None: not one)."""
        spec = self.plan.brokers[name]
        return spec.node if spec.url == EMBEDDED and self.redis_url is None else None

    def _start_broker(self, name: str, spec: BrokerSpec) -> str | None:
        """Start an embedded broker placed on this node (None: another node starts it)."""
        if self.node is not None and spec.node not in (None, self.node):
            return None
        data_dir = broker_data_dir(self.plan, name, self.state_dir)
        fsync = spec.persistence.appendfsync if spec.persistence is not None else "everysec"
        password, kept = spec.password, ""
        if password is None and not is_loopback(spec.host):
            password = stored_password(self.plan.name, name, self.state_dir, create=True)
            kept = (f"; it listens on {spec.host}: password generated in "
                    f"{password_file(self.plan.name, name, self.state_dir)}")
        broker = EmbeddedBroker(spec.host, spec.port, self.broker_kind, data_dir, fsync,
                                password=password)
        try:
            broker.start()
        except BaseException:
            broker.close()
            raise
        self.brokers[name] = broker
        keeps = f"AOF {fsync} in {data_dir}" if data_dir else "in memory: persistence none"
        self._say(f"broker {name!r}: embedded {self.broker_kind} at {broker.shown_url} "
                  f"({keeps}{kept})")
        return broker.url

    def check(self) -> None:
        """Restart an owned broker that died (same port, same data folder); say and count a
        broker that came back without its data."""
        now = time.monotonic()
        for name, broker in self.brokers.items():
            if broker.proc is not None and broker.proc.poll() is None:
                continue
            if now < self._broker_retry.get(name, 0.0):
                continue
            if broker.proc is not None:
                self._say(f"broker {name!r} died (code {broker.proc.returncode}); "
                          f"restarting on port {broker.port}")
                broker.proc = None
            try:
                broker.start()
            except Exception as exc:
                self._broker_retry[name] = now + 2.0
                self._say(f"broker {name!r} restart failed (next try in 2 s): {exc}")
                continue
            self._epochs.check(name, self.client(name), now, force=True)
        for name in self.used_here():
            self._epochs.check(name, self.client(name), now)

    def used_here(self) -> list[str]:
        """The brokers this node needs, in graph order: those it starts, and those its agents
        run on, read from or write to (every broker when this run has no ``--node``). A
        broker only other nodes use is not waited for, leased or checked here, so that each
        machine starts whatever the others do."""
        if self.node is None:
            return list(self.urls)
        used = set(self.brokers)
        for agent in self.plan.agents_on(self.node):
            used.add(agent.broker)
            used.update(inp.broker for inp in agent.inputs)
            used.update(out.broker for out in agent.outputs)
        return [name for name in self.urls if name in used]

    def starts_any(self) -> bool:
        """Whether this supervisor starts an embedded broker of its own."""
        return self.redis_url is None and any(
            spec.url == EMBEDDED and (self.node is None or spec.node in (None, self.node))
            for spec in self.plan.brokers.values())

    def guard_processes(self) -> None:
        """Tell the guard about each owned broker process (again after a restart)."""
        for name, broker in self.brokers.items():
            pid = broker.proc.pid if broker.proc is not None else None
            if pid is not None and self._guarded.get(name) != pid:
                if name in self._guarded:
                    self.guard.forget(self._guarded[name])
                self.guard.watch(pid, BROKER)
                self._guarded[name] = pid

    def wait_reachable(self, timeout_s: float, stopping: threading.Event,
                       stop_reason: Callable[[], str | None]) -> None:
        """Wait until every broker this node uses (:meth:`used_here`) answers PING; give up
        after ``timeout_s`` (or when stopped)."""
        deadline = time.monotonic() + timeout_s
        for name in self.used_here():
            url = self.urls[name]
            said = False
            while True:
                try:
                    if self.client(name).ping():
                        break
                except _DOWN as exc:
                    reason = refusal(exc)
                    if reason is not None:
                        raise refused(f"broker {name!r} of graph {self.plan.name!r} at "
                                      f"{url}", reason) from None
                if not said:
                    said = True
                    self._say(f"waiting for broker {name!r} at {redact_url(url)} "
                              f"(up to {timeout_s:g}s)")
                if stopping.is_set() and stop_reason() != "duration":
                    raise InterruptedError(f"stopped while waiting for broker {name!r}")
                if time.monotonic() >= deadline or stopping.is_set():
                    waited = ("before --duration ran out" if stopping.is_set()
                              else f"within --connect-timeout {timeout_s:g}s")
                    raise BrokerUnavailable(
                        f"cannot reach broker {name!r} of graph {self.plan.name!r} at "
                        f"{redact_url(url)} "
                        f"{waited}: is a Redis/Valkey server running and listening there? "
                        "Check --redis / $PROCGRAPH_REDIS or the broker's url in "
                        f"{self.plan.file}, and the network or firewall in between")
                stopping.wait(0.2)

    def client(self, broker: str) -> redis.Redis:
        """A client of broker ``broker`` (made once, short timeouts)."""
        if broker not in self.clients:
            self.clients[broker] = redis.Redis.from_url(
                self.urls[broker], socket_connect_timeout=1, socket_timeout=2)
        return self.clients[broker]
