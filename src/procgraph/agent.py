"""The Agent base class: typed ports, params, lifecycle hooks, one handler per input.

The class is the user's: parameters, ports and hooks with no-op defaults. Everything the
framework keeps while the agent runs lives in one :class:`procgraph.binding.AgentBinding`
(``self.binding``); ``running``, ``stop()``, ``sleep()``, ``flush()``, ``state`` and the output
ports delegate to it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from procgraph.binding import AgentBinding
from procgraph.context import AgentContext
from procgraph.ports import Input, Output

if TYPE_CHECKING:
    from procgraph.state import AgentState

__all__ = ["Agent", "AgentContext"]


class Agent:
    """Base class of every agent.

    Declare ports as class attributes (``Input(T)`` / ``Output(T)``), parameters in a
    nested ``Params(Agent.Params)`` model, and one handler ``on_<port>(self, msg)`` per
    input (``(self, msgs: list[T])`` for a batched input). An input may also have a
    ``prepare_<port>(self, msg)`` hook: the per-message work a handler would do first
    (e.g. turn a frame into a model's input tensor). It runs once per message as soon as the
    message is decoded, possibly on a reading thread ahead of the handler calls for earlier
    messages, so that work overlaps theirs; the handler then gets what it returned (a list
    of them when batched) instead of the messages. It must not send, change ``self.state``
    or write what the handler reads; it may read params and what ``setup()`` made. An
    exception from it dead-letters that message at once (``prepare_<port>: ...``), as an
    entry that cannot be decoded; keys and traces still follow the messages themselves.
    A source agent (no inputs)
    overrides ``run(self)`` and loops while ``self.running``. ``setup()``, ``teardown()``
    and ``tick()`` are optional hooks; ``teardown()`` runs also when ``setup()`` raised.

    ``self.params`` is an instance of the class's own ``Params`` (checked at construction);
    tell a type checker so with a class-body annotation ``params: Params``.

    Key and trace of what a handler sends: an output inherits from the *input in hand*:
    the input whose key equals the output's key; failing that, when exactly one input is in
    hand (a single handler, or a batch of one), that input. It takes that input's key (if it
    has none) and trace (if it has none), then gets this agent's hop appended (``in_ns`` =
    when that input was read). An output matching no input (a batch output whose key is
    empty or matches none of the batch, a source's message) starts a new trace: its own
    trace, usually empty, plus this agent's hop.
    """

    class Params(BaseModel):
        """Agent parameters from the graph; subclass it to declare your own."""

        model_config = ConfigDict(extra="forbid")

    inputs: ClassVar[dict[str, Input[Any]]] = {}
    outputs: ClassVar[dict[str, Output[Any]]] = {}
    #: an agent that listens on ``params.port`` says so here, for deployments: ``"public"``
    #: (published outside, e.g. an operator page) or ``"internal"`` (reached by other agents)
    serves: ClassVar[Literal["public", "internal"] | None] = None

    params: Params
    context: AgentContext
    log: logging.Logger
    #: the framework's handle on this running agent (agent code need not touch it)
    binding: AgentBinding

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inputs: dict[str, Input[Any]] = {}
        outputs: dict[str, Output[Any]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Input):
                    inputs[name] = value
                elif isinstance(value, Output):
                    outputs[name] = value
        cls.inputs = inputs
        cls.outputs = outputs
        for name in inputs:
            handler = getattr(cls, f"on_{name}", None)
            if not callable(handler):
                msg = (
                    f"{cls.__name__} declares input {name!r} but has no handler: "
                    f"add  def on_{name}(self, msg) -> None"
                )
                raise TypeError(msg)
        if not isinstance(cls.__dict__.get("Params", Agent.Params), type) or not issubclass(
            cls.Params, Agent.Params
        ):
            raise TypeError(f"{cls.__name__}.Params must subclass Agent.Params")

    @classmethod
    def endpoints(cls, params: Any) -> dict[str, str]:
        """Addresses this agent serves or talks to, by label, for the line's ready banner
        (``{"PLC": "10.0.0.5:502 unit 1"}``). ``params`` is a validated ``Params``; none by
        default. Override it to show where an operator or engineer should look."""
        return {}

    def __init__(self, params: Agent.Params | None = None, context: AgentContext | None = None):
        want = type(self).Params
        if params is None:
            params = want()
        elif not isinstance(params, want):
            msg = (f"{type(self).__name__} needs params of type {want.__qualname__}, got "
                   f"{type(params).__qualname__}: build them with "
                   f"{type(self).__name__}.Params(...)")
            raise TypeError(msg)
        self.params = params
        self.context = context or AgentContext(agent=type(self).__name__.lower())
        self.log = logging.getLogger(f"procgraph.{self.context.agent}.{self.context.replica}")
        self.binding = AgentBinding(self)

    # -- lifecycle hooks (no-op defaults) -------------------------------------------------
    def setup(self) -> None:
        """Called once before the first message; open devices, load models here."""

    def teardown(self) -> None:
        """Called once at the end, also after an error or a failed setup(); release here."""

    def tick(self) -> None:
        """Called about every 100 ms between messages (timeouts, windows); no-op default."""

    def run(self) -> None:
        """Main loop of a source agent (one without inputs); loop while ``self.running``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no inputs, so it must override run(self)"
        )

    # -- what the framework provides (delegated to self.binding) ----------------------------
    @property
    def running(self) -> bool:
        """True until the agent is asked to stop; checking it also signals liveness."""
        return self.binding.running

    def stop(self) -> None:
        """Ask the agent to stop after the current message (thread- and signal-safe)."""
        self.binding.stop()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on stop; returns ``self.running``.

        What a source sent before (and its state changes) is written out first, so pacing
        adds no latency.
        """
        return self.binding.sleep(seconds)

    def flush(self) -> None:
        """Write out now what this source sent so far, then its state changes.

        A source's ``send()`` writes at once, but returns before the broker's reply (what is
        sent meanwhile goes out together next); call ``flush()`` before recording elsewhere
        that they were sent. Handlers need not: their sends are written when the handler
        returns, before the input is acked.
        """
        self.binding.flush()

    @property
    def state(self) -> AgentState:
        """The agent's durable key-value state (``procgraph.state``), from ``setup()`` on."""
        return self.binding.state

    @property
    def is_source(self) -> bool:
        """True for an agent without inputs."""
        return not self.inputs
