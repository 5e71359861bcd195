"""Hosts one replica of one agent: builds its writers, readers and state, runs its lifecycle.

Lifecycle: the heartbeat starts; ``setup()``; then ``run()`` for a source (its sends through
a :class:`~procgraph.delivery.sendbuffer.SendBuffer`) or the consume loop
(:mod:`procgraph.runtime.consume`) for an agent with inputs; on the way out, queued acks are
flushed, ``teardown()`` runs (also after a failed ``setup()``), the agent state is flushed and
the heartbeat is cleared.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

import redis

from procgraph.agent import Agent
from procgraph.constants import stopping_key
from procgraph.context import AgentContext
from procgraph.delivery import claimcheck
from procgraph.delivery.sendbuffer import SendBuffer
from procgraph.errors import TRANSIENT_ERRORS, BrokerUnavailable
from procgraph.graph import AgentPlan, GraphPlan, import_agent
from procgraph.health import clear_heartbeat
from procgraph.runtime.consume import Consumer
from procgraph.runtime.heartbeat import (
    HeartbeatSource,
    HeartbeatThread,
    PortStats,
    flush_counts,
)
from procgraph.runtime.outbox import Outbox
from procgraph.state import AgentState
from procgraph.transport.connect import connect
from procgraph.transport.reader import GroupReader, ReadSpec
from procgraph.transport.retry import TRANSIENT, retry
from procgraph.transport.writer import StreamWriter, WriterConfig
from procgraph.yamlmarks import Marked

log = logging.getLogger("procgraph.runtime")
#: a replica whose supervisor died exits within this many seconds, stopped cleanly or not
ORPHAN_EXIT_S = 1.5


class AgentRunner:
    """Hosts one agent replica against real brokers until stopped."""

    def __init__(self, plan: GraphPlan, agent: str, replica: int, broker_urls: dict[str, str]):
        if agent not in plan.agents:
            raise KeyError(f"graph {plan.name!r} has no agent {agent!r}")
        self.plan = plan
        self.spec: AgentPlan = plan.agents[agent]
        self.replica = replica
        self.urls = broker_urls
        self._clients: dict[str, redis.Redis] = {}
        marked = Marked(plan.file, None, {})  # type: ignore[arg-type]
        self.cls = import_agent(self.spec.class_path, marked, ())
        on_node = plan.agents_on(self.spec.node)  # node None: the whole graph, one host
        ctx = AgentContext(
            graph=plan.name, agent=agent, replica=replica, graph_dir=plan.graph_dir,
            redis_factory=lambda: self.client(self.spec.broker),
            replicas_on_node=max(1, sum(a.replicas for a in on_node)),
            class_replicas_on_node=max(1, sum(a.replicas for a in on_node
                                              if a.class_path == self.spec.class_path)),
        )
        self.agent: Agent = self.cls(self.cls.Params.model_validate(self.spec.params), ctx)
        self.binding = self.agent.binding
        self.stop_event: threading.Event = self.binding.stop_event
        self.state = AgentState.for_broker(self.client(self.spec.broker), plan.name, agent,
                                           replica)
        self.binding.state = self.state
        self.stats_in = {p: PortStats() for p in self.cls.inputs}
        self.writers: dict[str, StreamWriter] = {}
        encodings: dict[str, dict[str, tuple[str, int]]] = {}
        for out in self.spec.outputs:
            cfg = WriterConfig(out.stream, out.maxlen, out.max_bytes, tuple(out.lossless_groups))
            self.writers[out.port] = StreamWriter(self.client(out.broker), cfg, self.stop_event,
                                                  on_wait=self.binding.touch)
            encodings[out.port] = {f: (e, out.quality) for f, e in out.encoding.items()}
        self.outbox = Outbox(self.writers, encodings)
        claimcheck.attach(self)  # same-host frames through shared memory (stash, on_sent)
        self.binding.bind_outputs(self.outbox.deliver)
        self.readers: list[GroupReader] = []
        by_broker: dict[str, list[ReadSpec]] = {}
        self.port_of: dict[str, str] = {}
        self.batch: dict[str, int] = {p: d.batch for p, d in self.cls.inputs.items()}
        self.max_wait_ms: dict[str, float] = {p: d.max_wait_ms for p, d in self.cls.inputs.items()}
        for inp in self.spec.inputs:
            self.batch[inp.port] = inp.batch
            self.max_wait_ms[inp.port] = inp.max_wait_ms
            by_broker.setdefault(inp.broker, []).append(
                ReadSpec(inp.stream, self.spec.name, inp.port, inp.start)
            )
            self.port_of[inp.stream] = inp.port
        for broker, specs in by_broker.items():
            self.readers.append(
                GroupReader(self.client(broker), specs, ctx.consumer, self.stop_event)
            )

    # -- brokers ------------------------------------------------------------------------
    def client(self, broker: str) -> redis.Redis:
        """The (shared) client of a named broker."""
        if broker not in self._clients:
            url = self.urls.get(broker)
            if url is None:
                raise KeyError(f"no URL for broker {broker!r}; is the supervisor running it?")
            self._clients[broker] = connect(url)
        return self._clients[broker]

    def _blocked_s(self, port: str) -> float:
        writer = self.writers.get(port)
        return writer.blocked_s if writer is not None else 0.0

    # -- main -----------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT."""
        def handler(signum: int, frame: Any) -> None:
            log.info("signal %d: stopping after the current message", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def watch_parent(self, name: str = "supervisor") -> None:
        """Under a supervisor: stop when it is gone (this process's parent changes).

        The parent is the supervisor, or the line's fork server (``name`` says which in the
        message), which exits as soon as the supervisor does. The supervisor's guard process
        stops its replicas too; this is the replica's own check. Stops like SIGTERM, and
        exits hard if that takes over ``ORPHAN_EXIT_S``.
        """
        parent = os.getppid()

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.25)
            log.warning("%s (pid %d) is gone: stopping", name, parent)
            self.stop_event.set()
            time.sleep(ORPHAN_EXIT_S)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()

    def run(self) -> None:
        """Set up, loop until stopped, tear down; acks and state are flushed on the way out."""
        about = HeartbeatSource(
            graph=self.plan.name, agent=self.spec.name, replica=self.replica,
            replicas=self.spec.replicas, timeout_s=self.spec.heartbeat_timeout_s,
            inputs=self.stats_in, blocked_s=self._blocked_s,
        )
        self._heartbeat = HeartbeatThread(self.client(self.spec.broker), about, self.binding,
                                          self.stop_event)
        self._heartbeat.start()
        try:
            self.agent.setup()
            if self.agent.is_source:
                self._run_source()
            else:
                Consumer(self).run()
        except InterruptedError:
            pass
        finally:
            self._shut_down()

    def _run_source(self) -> None:
        buffer = SendBuffer(self.writers, self.stop_event,
                            state=(self.state.store, self.client(self.spec.broker)))
        self.outbox.buffer = buffer

        def flush() -> None:  # a source's sends first, then its state
            buffer.flush()
            retry(self.state.flush, "write agent state", self.stop_event)

        self.binding.flush_hook = flush
        try:
            self.agent.run()
        finally:
            with contextlib.suppress(InterruptedError, *TRANSIENT):
                buffer.close()

    def _shut_down(self) -> None:
        self.stop_event.set()
        # ending by itself: the heartbeat that is about to go is not a stall (the supervisor
        # lets this pid exit instead of killing it)
        with contextlib.suppress(*TRANSIENT_ERRORS):
            self.client(self.spec.broker).set(
                stopping_key(self.plan.name, self.spec.name, self.replica), os.getpid(), ex=60)
        try:
            for reader in self.readers:
                reader.flush_acks()
        except (InterruptedError, *TRANSIENT):  # type: ignore[misc]
            log.warning("could not flush acks; those entries will be delivered again")
        try:
            self.agent.teardown()
        finally:
            try:
                self.state.flush()
                flush_counts(self.client(self.spec.broker), self.plan.name, self.agent.context)
            except BrokerUnavailable:
                log.warning("could not write the agent state at teardown: broker unreachable")
            heartbeat = getattr(self, "_heartbeat", None)
            if heartbeat is not None:  # its last beat must not come after the clear
                heartbeat.join(timeout=2.0)
            with contextlib.suppress(BrokerUnavailable):  # gone at once, not 5 s later
                clear_heartbeat(self.client(self.spec.broker), self.plan.name, self.spec.name,
                                self.replica)
            for reader in self.readers:
                reader.close()
            for writer in self.writers.values():
                writer.close()
