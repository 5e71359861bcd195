"""``procgraph streams`` and ``procgraph pub``: list a line's streams, inject one message."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the command(s) to the CLI."""
