"""``procgraph info module:Class``: an agent's ports, message types and params."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the command(s) to the CLI."""
