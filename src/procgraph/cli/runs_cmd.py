"""``procgraph ps`` and ``procgraph stop``: list and stop the running lines."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the command(s) to the CLI."""
