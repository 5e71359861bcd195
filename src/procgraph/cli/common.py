"""Helpers shared by CLI commands: loading a graph with friendly errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from procgraph.constants import BROKERS_ENV
from procgraph.errors import ProcgraphError
from procgraph.graph import EMBEDDED, GraphPlan, load_graph


def fail(message: str) -> typer.Exit:
    """Print an error (no traceback) and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def load_or_exit(file: Path) -> GraphPlan:
    """Load and validate a graph; on error print what to fix and exit 1."""
    try:
        return load_graph(file)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None


def broker_urls(plan: GraphPlan, override: str | None) -> dict[str, str]:
    """The URL of each broker of a graph, as a tool outside the supervisor reaches it.

    An explicit URL in the graph wins; then ``$PROCGRAPH_BROKERS`` (set by the supervisor
    for its replicas); an embedded broker takes ``override`` (``--redis`` or
    ``$PROCGRAPH_REDIS``), else its fixed ``port``. Raises typer.Exit when one is unknown.
    """
    urls: dict[str, str] = {}
    from_env = json.loads(os.environ.get(BROKERS_ENV, "{}"))
    for name, spec in plan.brokers.items():
        if spec.url != EMBEDDED:
            urls[name] = spec.url
        elif name in from_env and not override:
            urls[name] = from_env[name]
        elif override:
            urls[name] = override
        elif spec.port is not None:
            urls[name] = f"redis://{spec.host}:{spec.port}"
        else:
            raise fail(f"broker {name!r} of graph {plan.name!r} is embedded on a free port: "
                       "pass --redis URL (the URL `procgraph run` printed)")
    return urls
