"""Run an agent in-process, without a broker: for unit tests of agent logic.

:class:`AgentHarness` drives one agent by hand (the same lifecycle and key/trace rule as the
runtime, every message through the real wire codec, state in memory); :func:`run_agent`
does it in one call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from procgraph import codec
from procgraph.agent import Agent
from procgraph.context import AgentContext
from procgraph.message import Message
from procgraph.state import AgentState

__all__ = ["AgentHarness", "FakeClock", "run_agent"]


class AgentHarness:
    """Drives one agent by hand: feed messages to its inputs, collect what it sends.

    Every message crosses the real wire codec both ways, so a field that would not
    survive a stream fails here too. The agent's ``self.state`` is in memory
    (:meth:`procgraph.state.AgentState.in_memory`) and flushed as the runtime does it: after
    each handler call, on ``flush()``/``sleep()`` and at teardown. Pass ``state=`` (e.g. an
    earlier harness's ``.state``) to start from existing state, as after a restart.
    """

    def __init__(
        self,
        agent_cls: type[Agent],
        params: Mapping[str, Any] | None = None,
        context: AgentContext | None = None,
        state: AgentState | None = None,
    ) -> None:
        self.agent = agent_cls(agent_cls.Params(**dict(params or {})), context)
        ctx = self.agent.context
        if state is None:
            state = AgentState.in_memory(ctx.graph, ctx.agent, ctx.replica)
        self.state = state
        self.sent: dict[str, list[Message]] = {name: [] for name in agent_cls.outputs}
        self.binding = self.agent.binding
        self.binding.state = state
        self.binding.flush_hook = state.flush
        self.binding.bind_outputs(self._deliver)
        self._started = False

    def _deliver(self, port: str, msg: Message) -> None:
        fields = codec.encode(msg)
        wire = {k: bytes(v) for k, v in fields.items()}
        self.sent[port].append(codec.decode(wire, type(self.agent).outputs[port].type))

    def __enter__(self) -> AgentHarness:
        try:
            self.agent.setup()
        except BaseException:
            self.__exit__()  # teardown() runs after a failed setup(), as in the runtime
            raise
        self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.binding.stop()
        try:
            self.agent.teardown()
        finally:
            self.state.flush()

    @contextmanager
    def running(self) -> Iterator[AgentHarness]:
        """Set up a source agent and run its ``run()`` in a thread until the block ends; then
        stop it, wait for ``run()`` to return (10 s at most) and tear it down."""
        thread = threading.Thread(target=self.agent.run, name="harness-run", daemon=True)
        with self:
            thread.start()
            try:
                yield self
            finally:
                self.agent.stop()
                thread.join(10)
        if thread.is_alive():
            raise RuntimeError(f"{type(self.agent).__name__}.run() did not return within 10 s "
                               "of stop(): loop while self.running")

    def feed(self, port: str, messages: Message | Iterable[Message]) -> None:
        """Hand messages to input ``port`` as the runtime would: each through the port's
        ``prepare_<port>`` hook if it has one (all of them before the first handler call,
        as the runtime may), then to the handler, batched if declared. An exception from
        the hook is raised here (the runtime dead-letters that message)."""
        inputs = type(self.agent).inputs
        if port not in inputs:
            raise KeyError(f"{type(self.agent).__name__} has no input {port!r}")
        spec = inputs[port]
        items = [messages] if isinstance(messages, Message) else list(messages)
        decoded = [
            codec.decode({k: bytes(v) for k, v in codec.encode(m).items()}, spec.type)
            for m in items
        ]
        prepare = self.binding.preparers().get(port)
        values = decoded if prepare is None else [prepare(m) for m in decoded]
        if spec.batch > 1:
            for i in range(0, len(decoded), spec.batch):
                self._handle(port, values[i : i + spec.batch], decoded[i : i + spec.batch])
        else:
            for m, v in zip(decoded, values, strict=True):
                self._handle(port, v, [m])

    def _handle(self, port: str, payload: Any, messages: list[Message]) -> None:
        """One handler call; its state changes and counts are kept after it, dropped if it
        raised (as the runtime does)."""
        mark = self.state.checkpoint()
        counts = self.agent.context.line_counts
        counts.begin_attempt()
        try:
            self.binding.handle(port, payload, time.time_ns(), messages)
        except BaseException:
            self.state.rollback(mark)
            counts.end_attempt(keep=False)
            raise
        counts.end_attempt(keep=True)
        self.state.flush()


def run_agent(
    agent_cls: type[Agent],
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Iterable[Message]] | None = None,
    context: AgentContext | None = None,
    state: AgentState | None = None,
) -> dict[str, list[Message]]:
    """Set up an agent, feed it ``inputs`` (port -> messages), tear it down, return outputs."""
    with AgentHarness(agent_cls, params, context, state) as harness:
        for port, messages in (inputs or {}).items():
            harness.feed(port, messages)
    return harness.sent


class FakeClock:
    """A wall clock in nanoseconds that moves only when told: pass it where an agent or a
    rule takes a ``clock`` (e.g. ``JoinAgent.clock``), instead of sleeping in a test."""

    def __init__(self, now_ns: int = 1_800_000_000 * 10**9) -> None:
        self.now = now_ns

    def __call__(self) -> int:
        """The current fake time, ns since the epoch."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += int(seconds * 1e9)
