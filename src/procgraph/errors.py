"""The exception hierarchy: every error procgraph raises on purpose is a ProcgraphError."""

from __future__ import annotations


class ProcgraphError(Exception):
    """Root of all procgraph errors; the message says what went wrong and how to fix it."""


class GraphError(ProcgraphError):
    """A process graph is malformed; the message names the file, the line and the fix."""


class CodecError(ProcgraphError):
    """A stream entry cannot be decoded into the expected message type."""


class BrokerError(ProcgraphError):
    """A broker cannot be started or reached."""


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
