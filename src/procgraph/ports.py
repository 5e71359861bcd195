"""Ports: typed class attributes of an agent, declared once and wired by the graph."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar, overload

from procgraph.codec import ENCODINGS
from procgraph.constants import DEFAULT_MAX_BYTES, DEFAULT_MAXLEN
from procgraph.message import Message

M = TypeVar("M", bound=Message)
Policy = Literal["lossless", "latest"]
POLICIES: tuple[str, ...] = ("lossless", "latest")


def _check_type(message_type: Any, what: str) -> None:
    if not (isinstance(message_type, type) and issubclass(message_type, Message)):
        msg = f"{what}(...) needs a procgraph.Message subclass, got {message_type!r}"
        raise TypeError(msg)


class Input(Generic[M]):
    """An input port: ``frames = Input(Frame, batch=8, max_wait_ms=5)``.

    The agent handles it in ``on_<name>(self, msg)`` (or ``(self, msgs: list)`` when
    ``batch > 1``); an optional ``prepare_<name>(self, msg)`` hook does per-message work
    ahead of the handler (see :class:`~procgraph.Agent`). ``policy`` is the default
    delivery policy of edges into this port:
    ``lossless`` (the producer waits rather than trim unread entries) or ``latest``
    (a preview that may skip). ``optional`` inputs may be left unwired in a graph.
    """

    def __init__(
        self,
        message_type: type[M],
        *,
        batch: int = 1,
        max_wait_ms: float = 0.0,
        policy: Policy = "lossless",
        optional: bool = False,
        doc: str = "",
    ) -> None:
        _check_type(message_type, "Input")
        if batch < 1:
            raise ValueError(f"Input batch must be >= 1, got {batch}")
        if max_wait_ms < 0:
            raise ValueError(f"Input max_wait_ms must be >= 0, got {max_wait_ms}")
        if policy not in POLICIES:
            raise ValueError(f"Input policy must be one of {POLICIES}, got {policy!r}")
        self.type = message_type
        self.batch = batch
        self.max_wait_ms = max_wait_ms
        self.policy: Policy = policy
        self.optional = optional
        self.doc = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Input({self.type.__name__}, name={self.name!r}, batch={self.batch})"


class Output(Generic[M]):
    """An output port: ``scaled = Output(Reading)``; send with ``self.scaled.send(msg)``.

    Each output port is one Redis stream, capped at ``maxlen`` entries and about
    ``max_mb`` megabytes (whichever is smaller). ``encoding`` maps array fields to
    ``raw``/``jpeg``/``png`` (``quality`` for jpeg).

    ``send`` raises :class:`~procgraph.errors.MessageTooLarge` for a message that can never
    be written: one over ``max_mb`` in all, or with an array over the broker's
    ``proto-max-bulk-len`` (512 MiB by default). It is not sent and never resent: in a
    source the exception reaches ``run()``; in a handler the input is retried, then
    dead-lettered with that reason.
    """

    def __init__(
        self,
        message_type: type[M],
        *,
        maxlen: int = DEFAULT_MAXLEN,
        max_mb: float = DEFAULT_MAX_BYTES / 2**20,
        encoding: dict[str, str] | None = None,
        quality: int = 85,
        doc: str = "",
    ) -> None:
        _check_type(message_type, "Output")
        if maxlen < 1:
            raise ValueError(f"Output maxlen must be >= 1, got {maxlen}")
        for field, enc in (encoding or {}).items():
            if enc not in ENCODINGS:
                raise ValueError(f"Output encoding for {field!r} must be one of {ENCODINGS}")
        self.type = message_type
        self.maxlen = maxlen
        self.max_mb = max_mb
        self.encoding = dict(encoding or {})
        self.quality = quality
        self.doc = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Output[M]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> BoundOutput[M]: ...
    def __get__(self, obj: object | None, owner: type) -> Output[M] | BoundOutput[M]:
        if obj is None:
            return self
        binding = obj.__dict__.get("binding")  # procgraph.binding.AgentBinding
        bound: dict[str, BoundOutput[Any]] = binding.outputs if binding is not None else {}
        port = bound.get(self.name)
        if port is None:
            msg = f"output {self.name!r} is not connected: the agent has not been started"
            raise RuntimeError(msg)
        return port

    def __repr__(self) -> str:
        return f"Output({self.type.__name__}, name={self.name!r})"


class BoundOutput(Generic[M]):
    """An output port of a running agent: ``send`` publishes one message."""

    def __init__(self, spec: Output[M], deliver: Callable[[Message], None]) -> None:
        self.spec = spec
        self._deliver = deliver
        self.sent = 0

    @property
    def name(self) -> str:
        """The port name."""
        return self.spec.name

    def send(self, msg: M) -> None:
        """Publish ``msg``; raises TypeError if it is not of the port's type."""
        if not isinstance(msg, self.spec.type):
            got = type(msg).__name__
            want = self.spec.type.__name__
            raise TypeError(f"output {self.name!r} carries {want}, cannot send {got}")
        self._deliver(msg)
        self.sent += 1
