"""Run an agent in-process, without a broker: for unit tests of agent logic."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from procgraph import codec
from procgraph.agent import Agent, AgentContext
from procgraph.message import Message


class AgentHarness:
    """Drives one agent by hand: feed messages to its inputs, collect what it sends.

    Every message crosses the real wire codec both ways, so a field that would not
    survive a stream fails here too.
    """

    def __init__(
        self,
        agent_cls: type[Agent],
        params: Mapping[str, Any] | None = None,
        context: AgentContext | None = None,
    ) -> None:
        self.agent = agent_cls(agent_cls.Params(**dict(params or {})), context)
        self.sent: dict[str, list[Message]] = {name: [] for name in agent_cls.outputs}
        self.agent._bind_outputs(self._deliver)
        self._started = False

    def _deliver(self, port: str, msg: Message) -> None:
        fields = codec.encode(msg)
        wire = {k: bytes(v) for k, v in fields.items()}
        self.sent[port].append(codec.decode(wire, self.agent.outputs[port].type))

    def __enter__(self) -> AgentHarness:
        self.agent.setup()
        self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.agent.stop()
        self.agent.teardown()

    def feed(self, port: str, messages: Message | Iterable[Message]) -> None:
        """Hand messages to input ``port`` as the runtime would (batched if declared)."""
        if port not in self.agent.inputs:
            raise KeyError(f"{type(self.agent).__name__} has no input {port!r}")
        spec = self.agent.inputs[port]
        items = [messages] if isinstance(messages, Message) else list(messages)
        decoded = [
            codec.decode({k: bytes(v) for k, v in codec.encode(m).items()}, spec.type)
            for m in items
        ]
        if spec.batch > 1:
            for i in range(0, len(decoded), spec.batch):
                self.agent._handle(port, decoded[i : i + spec.batch], time.time_ns())
        else:
            for m in decoded:
                self.agent._handle(port, m, time.time_ns())


def run_agent(
    agent_cls: type[Agent],
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Iterable[Message]] | None = None,
    context: AgentContext | None = None,
) -> dict[str, list[Message]]:
    """Set up an agent, feed it ``inputs`` (port -> messages), tear it down, return outputs."""
    with AgentHarness(agent_cls, params, context) as harness:
        for port, messages in (inputs or {}).items():
            harness.feed(port, messages)
    return harness.sent
