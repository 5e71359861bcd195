"""The Agent base class: typed ports, params, lifecycle hooks, handlers per input."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from procgraph.message import Hop, Message
from procgraph.ports import BoundOutput, Input, Output

if TYPE_CHECKING:
    import redis


@dataclass
class AgentContext:
    """What the framework tells an agent about where it runs."""

    graph: str = "test"
    agent: str = "agent"
    replica: int = 0
    graph_dir: Path = field(default_factory=Path.cwd)
    redis_factory: Callable[[], redis.Redis] | None = None

    @property
    def consumer(self) -> str:
        """Consumer name of this replica in its consumer groups."""
        return f"{self.agent}-{self.replica}"

    def redis(self) -> redis.Redis:
        """A client for this agent's broker (e.g. for the model registry)."""
        if self.redis_factory is None:
            raise RuntimeError("this agent runs without a broker")
        return self.redis_factory()

    def resolve_path(self, path: str | Path) -> Path:
        """A path from params, relative to the graph file's folder unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.graph_dir / p)


class Agent:
    """Base class of every agent.

    Declare ports as class attributes (``Input(T)`` / ``Output(T)``), parameters in a
    nested ``Params(Agent.Params)`` model, and one handler ``on_<port>(self, msg)`` per
    input. A source agent (no inputs) overrides ``run(self)`` and loops while
    ``self.running``. ``setup()`` and ``teardown()`` are optional hooks.
    """

    class Params(BaseModel):
        """Agent parameters from the graph; subclass it to declare your own."""

        model_config = ConfigDict(extra="forbid")

    inputs: ClassVar[dict[str, Input[Any]]] = {}
    outputs: ClassVar[dict[str, Output[Any]]] = {}

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

    def __init__(self, params: Agent.Params | None = None, context: AgentContext | None = None):
        self.params = params if params is not None else self.Params()
        self.context = context or AgentContext(agent=type(self).__name__.lower())
        self.log = logging.getLogger(f"procgraph.{self.context.agent}.{self.context.replica}")
        self._stop = threading.Event()
        self._tick = time.monotonic()
        self._current: Message | None = None
        self._in_ns = 0
        self._bound_outputs: dict[str, BoundOutput[Any]] = {}
        self._before_sleep: Callable[[], None] | None = None

    # -- lifecycle hooks (no-op defaults) -------------------------------------------------
    def setup(self) -> None:
        """Called once before the first message; open devices, load models here."""

    def teardown(self) -> None:
        """Called once after the last message, also after an error; release resources."""

    def tick(self) -> None:
        """Called about every 100 ms between messages (timeouts, windows); no-op default."""

    def run(self) -> None:
        """Main loop of a source agent (one without inputs); loop while ``self.running``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no inputs, so it must override run(self)"
        )

    # -- state ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True until the agent is asked to stop; checking it also signals liveness."""
        self._tick = time.monotonic()
        return not self._stop.is_set()

    def stop(self) -> None:
        """Ask the agent to stop after the current message (thread- and signal-safe)."""
        self._stop.set()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on stop; returns ``self.running``.

        What a source sent before is written out first, so pacing adds no latency.
        """
        self.flush()
        self._stop.wait(max(0.0, seconds))
        return self.running

    def flush(self) -> None:
        """Write out now what this source sent so far.

        A source's ``send()`` may hold small messages up to 2 ms to write them together;
        call ``flush()`` before recording elsewhere that they were sent. Handlers need not:
        their sends are written when the handler returns, before the input is acked.
        """
        if self._before_sleep is not None:
            self._before_sleep()

    @property
    def is_source(self) -> bool:
        """True for an agent without inputs."""
        return not self.inputs

    # -- used by the runtime and procgraph.testing ------------------------------------------
    def _bind_outputs(self, deliver: Callable[[str, Message], None]) -> None:
        for name, spec in self.outputs.items():
            self._bound_outputs[name] = BoundOutput(
                spec, lambda m, _n=name: deliver(_n, self._stamp(m))
            )

    def _stamp(self, msg: Message) -> Message:
        """A copy of an outgoing message with the key and trace of the input being handled.

        The sender's object is left as it was, so it can be sent again or kept.
        """
        self._tick = time.monotonic()
        now = time.time_ns()
        current = self._current
        key = msg.key or (current.key if current is not None else "")
        trace = list(msg.trace) if msg.trace or current is None else list(current.trace)
        in_ns = self._in_ns or msg.ts_ns
        trace.append(
            Hop(agent=self.context.agent, replica=self.context.replica, in_ns=in_ns, out_ns=now)
        )
        out = msg.model_copy()
        out.__dict__["key"] = key
        out.__dict__["trace"] = trace
        return out

    def _handle(self, port: str, payload: Message | list[Message], in_ns: int) -> None:
        self._tick = time.monotonic()
        self._in_ns = in_ns
        self._current = payload if isinstance(payload, Message) else None
        try:
            getattr(self, f"on_{port}")(payload)
        finally:
            self._current = None
            self._in_ns = 0
