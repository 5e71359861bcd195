"""The one object between an agent and what runs it (the runtime or ``procgraph.testing``).

An :class:`AgentBinding` owns everything the framework keeps per running agent: the stop
event, the liveness tick, the bound output ports, the flush hook, the agent state, and the
dispatch of inputs to handlers with the key and trace rule. The :class:`~procgraph.Agent`
holds only a reference to it (``agent.binding``); its public ``running``, ``stop()``,
``sleep()``, ``flush()``, ``state`` and output ports delegate here. Runners talk to the
binding, never to the agent's attributes.

Key and trace rule (single and batch handlers alike): an output inherits from the *input in
hand*: the input whose key equals the output's key; failing that, when exactly one input is in
hand (a single handler, or a batch of one), that input. It takes that input's key (if it has
none) and trace (if it has none), then gets this hop appended (``in_ns`` = when that input was
read). An output matching no input (a batch output whose key is empty or matches none of the
batch, or a source's message) keeps its own trace (usually empty: a new trace starts) and
gets this hop, with ``in_ns`` = when the batch was read (a source: the message's ``ts_ns``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from procgraph.message import Hop, Message
from procgraph.ports import BoundOutput

if TYPE_CHECKING:
    from procgraph.agent import Agent
    from procgraph.state import AgentState


class AgentBinding:
    """What the framework holds of one agent instance while it runs (see module docstring)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        #: set to stop the agent; a runner may share it with its threads
        self.stop_event = threading.Event()
        #: ``time.monotonic()`` of the agent's last sign of progress
        self.last_tick = time.monotonic()
        #: output port name -> the port the agent sends on
        self.outputs: dict[str, BoundOutput[Any]] = {}
        #: what ``agent.flush()`` runs (a runner writes the sends, then the state)
        self.flush_hook: Callable[[], None] | None = None
        self._state: AgentState | None = None
        self._inputs: Sequence[Message] = ()
        self._in_ns: Sequence[int] = ()

    # -- what the agent's public methods delegate to ---------------------------------------
    def touch(self) -> None:
        """Record that the agent is making progress (the heartbeat reads it)."""
        self.last_tick = time.monotonic()

    @property
    def running(self) -> bool:
        """True until stopped; checking it also signals liveness."""
        self.touch()
        return not self.stop_event.is_set()

    def stop(self) -> None:
        """Ask the agent to stop after the current message."""
        self.stop_event.set()

    def sleep(self, seconds: float) -> bool:
        """Flush, then wait up to ``seconds`` or until stopped; returns ``running``."""
        self.flush()
        self.stop_event.wait(max(0.0, seconds))
        return self.running

    def flush(self) -> None:
        """Run the flush hook (a source's sends, then its state); else flush the state."""
        if self.flush_hook is not None:
            self.flush_hook()
        elif self._state is not None:
            self._state.flush()

    @property
    def state(self) -> AgentState:
        """The agent's state (attached by the runner before ``setup()``)."""
        if self._state is None:
            raise RuntimeError("self.state is not available: the agent has not been started "
                               "(use procgraph.testing.AgentHarness in tests)")
        return self._state

    @state.setter
    def state(self, state: AgentState) -> None:
        self._state = state

    @property
    def has_state(self) -> bool:
        """True once a state is attached."""
        return self._state is not None

    # -- what runners call -----------------------------------------------------------------
    def bind_outputs(self, deliver: Callable[[str, Message], None]) -> None:
        """Connect every output port: a sent message is stamped, then ``deliver(port, msg)``."""
        for name, spec in type(self.agent).outputs.items():
            self.outputs[name] = BoundOutput(
                spec, lambda m, _n=name: deliver(_n, self.stamp(m))  # type: ignore[misc]
            )

    def handle(self, port: str, payload: Any, in_ns: int | Sequence[int],
               messages: Sequence[Message] | None = None) -> None:
        """Call ``on_<port>(payload)`` with ``payload`` as the inputs in hand.

        ``in_ns``: when the input (or each input of a batch) was read, ns since the epoch.
        ``messages``: the inputs in hand when ``payload`` is not made of them (what the
        port's ``prepare_<port>`` hook made of them).
        """
        self.touch()
        if messages is not None:
            inputs = list(messages)
        else:
            inputs = [payload] if isinstance(payload, Message) else list(payload)
        times = [in_ns] * len(inputs) if isinstance(in_ns, int) else list(in_ns)
        if len(times) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(times)} read times")
        self._inputs, self._in_ns = inputs, times
        try:
            getattr(self.agent, f"on_{port}")(payload)
        finally:
            self._inputs, self._in_ns = (), ()

    def preparers(self) -> dict[str, Callable[[Message], Any]]:
        """Input port -> the agent's ``prepare_<port>`` hook, for the ports that have one."""
        hooks = {}
        for port in type(self.agent).inputs:
            hook = getattr(self.agent, f"prepare_{port}", None)
            if callable(hook):
                hooks[port] = hook
        return hooks

    def stamp(self, msg: Message) -> Message:
        """A copy of an outgoing message with key and trace by the rule (module docstring).

        The sender's object is left as it was, so it can be sent again or kept.
        """
        self.touch()
        now = time.time_ns()
        inputs, times = self._inputs, self._in_ns
        source: int | None = None
        if msg.key:
            source = next((i for i, m in enumerate(inputs) if m.key == msg.key), None)
        if source is None and len(inputs) == 1:
            source = 0
        if source is not None:
            parent = inputs[source]
            key = msg.key or parent.key
            trace = list(msg.trace) if msg.trace else list(parent.trace)
            in_ns = times[source]
        else:
            key = msg.key
            trace = list(msg.trace)
            in_ns = min(times) if times else msg.ts_ns
        ctx = self.agent.context
        trace.append(Hop(agent=ctx.agent, replica=ctx.replica, in_ns=in_ns, out_ns=now))
        out = msg.model_copy()
        out.__dict__["key"] = key
        out.__dict__["trace"] = trace
        return out
