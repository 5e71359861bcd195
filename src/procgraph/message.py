"""Messages: pydantic models with an envelope, scalar fields and numpy array fields."""

from __future__ import annotations

import os
import time
import types
import typing
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

_counter = 0


def new_id() -> str:
    """A unique, roughly time-ordered message id (nanoseconds, pid and a counter)."""
    global _counter
    _counter = (_counter + 1) & 0xFFFFFF
    return f"{time.time_ns():x}-{os.getpid():x}-{_counter:x}"


class Hop(BaseModel):
    """One agent a message passed through: who handled it and when (ns since the epoch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    replica: int = 0
    in_ns: int
    out_ns: int


_ENVELOPE = frozenset({"id", "key", "ts_ns", "trace"})
_TYPES: dict[str, type[Message]] = {}


def _is_array_annotation(annotation: Any) -> bool:
    if annotation is np.ndarray:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and args[0] is np.ndarray
    return origin is np.ndarray


class Message(BaseModel):
    """Base class of everything that travels on a stream.

    Subclass it and declare fields. Scalar fields travel as JSON; fields annotated
    ``np.ndarray`` travel as raw bytes with dtype and shape beside them. Every message has
    an envelope: ``id``, ``key`` (correlation key, e.g. a part id), ``ts_ns`` (creation
    time) and ``trace`` (the hops it took). ``type_name``/``type_version`` name the schema
    on the wire; they default to the class name and 1.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    type_name: ClassVar[str] = "Message"
    type_version: ClassVar[int] = 1
    array_fields: ClassVar[frozenset[str]] = frozenset()
    scalar_fields: ClassVar[frozenset[str]] = frozenset()

    id: str = Field(default_factory=new_id)
    key: str = ""
    ts_ns: int = Field(default_factory=time.time_ns)
    trace: list[Hop] = Field(default_factory=list)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" not in cls.__dict__:
            cls.type_name = cls.__name__

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        arrays = {
            name for name, f in cls.model_fields.items() if _is_array_annotation(f.annotation)
        }
        cls.array_fields = frozenset(arrays)
        cls.scalar_fields = frozenset(set(cls.model_fields) - arrays - _ENVELOPE)
        _TYPES.setdefault(cls.type_name, cls)

    @classmethod
    def type_label(cls) -> str:
        """The versioned schema label shown in errors and docs, e.g. ``Frame/v1``."""
        return f"{cls.type_name}/v{cls.type_version}"


def known_type(name: str) -> type[Message] | None:
    """The Message subclass imported in this process under ``name``, if any."""
    return _TYPES.get(name)
