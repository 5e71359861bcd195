"""``procgraph audit GRAPH``: account for every entry on every edge of a line."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the command(s) to the CLI."""
