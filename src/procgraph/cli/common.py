"""Helpers shared by CLI commands: loading a graph and finding its brokers, friendly errors."""

from __future__ import annotations

from pathlib import Path

import typer

from procgraph.brokers import resolve_broker_urls
from procgraph.errors import ProcgraphError
from procgraph.graph import GraphPlan, load_graph
from procgraph.settings import load_settings


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


def redis_url_or_env(url: str | None) -> str | None:
    """``--redis URL`` if given, else ``$PROCGRAPH_REDIS`` (through procgraph.settings).

    Options take their environment default here rather than from typer's ``envvar=``, so
    procgraph.settings stays the one reader of ``PROCGRAPH_*`` variables.
    """
    return url or load_settings().redis


def broker_urls(plan: GraphPlan, override: str | None) -> dict[str, str]:
    """The URL of each broker of a graph, as a tool outside the supervisor reaches it.

    :func:`procgraph.brokers.resolve_broker_urls` with ``override`` (``--redis``, else
    ``$PROCGRAPH_REDIS``) and the supervisor's ``$PROCGRAPH_BROKERS``; exits 1 saying what
    to pass when a broker's URL cannot be known.
    """
    try:
        return resolve_broker_urls(plan, redis_url_or_env(override),
                                   given=load_settings().brokers)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None
