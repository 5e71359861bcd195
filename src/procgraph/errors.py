"""The exception hierarchy: every error procgraph raises on purpose is a ProcgraphError.

Messages say what went wrong and how to fix it. ``BrokerUnavailable`` is the one transient
error: the broker cannot be reached right now, and trying again later may succeed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ProcgraphError(Exception):
    """Root of all procgraph errors; the message says what went wrong and how to fix it."""


class GraphError(ProcgraphError):
    """A process graph is malformed; the message names the file, the line and the fix."""


class CodecError(ProcgraphError):
    """A stream entry cannot be decoded into the expected message type."""


class BrokerError(ProcgraphError):
    """A broker cannot be started or reached."""


class BrokerUnavailable(BrokerError, ConnectionError):
    """The broker cannot be reached right now (connection refused, reset or timed out).

    Transient: the same call may succeed once the broker is back. The public facades
    (agent state, model registry, health) raise it instead of the Redis client's own errors,
    so agent code needs no Redis imports to tell "retry later" from a real failure.
    """


class StateError(ProcgraphError):
    """Agent state cannot be read or written as asked (e.g. a value that is not JSON)."""


class ModelRegistryError(ProcgraphError):
    """A model registry operation cannot be done; the message says why and what to do."""


class ModelIntegrityError(ModelRegistryError):
    """The stored bytes of a model version do not match their recorded sha256."""


class RecordingError(ProcgraphError):
    """A recording file cannot be written or read back."""


class DeployError(ProcgraphError):
    """A deployment cannot be generated from the graph as written."""


class MissingDependencyError(ProcgraphError):
    """An optional dependency is not installed; the message names the pip command."""


def require(module: str, extra: str) -> object:
    """Import an optional dependency, or raise a MissingDependencyError naming the fix."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{module} is not installed: run  pip install 'procgraph[{extra}]'"
        raise MissingDependencyError(msg) from exc


def _transient_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


#: the exceptions that mean "the broker is unreachable right now" (BrokerUnavailable included)
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = _transient_errors()


@contextmanager
def broker_unavailable_as(what: str) -> Iterator[None]:
    """Turn the Redis client's connection errors inside the block into BrokerUnavailable."""
    try:
        yield
    except BrokerUnavailable:
        raise
    except TRANSIENT_ERRORS as exc:
        raise BrokerUnavailable(f"{what}: broker unreachable ({exc})") from exc
