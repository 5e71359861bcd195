"""Helpers shared by CLI commands: loading a graph with friendly errors."""

from __future__ import annotations

from pathlib import Path

import typer

from procgraph.errors import ProcgraphError
from procgraph.graph import GraphPlan, load_graph


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
