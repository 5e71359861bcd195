"""``procgraph validate FILE``: check a graph without starting anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import load_or_exit


def validate(files: Annotated[list[Path], typer.Argument(
        metavar="FILE...", help="graph YAML files")]) -> None:
    """Check graphs: YAML, keys, imports, params, ports and message types of every edge.

    Every file is checked (one ``ok`` or ``error:`` line each); exit 1 when any failed.
    """
    failed = 0
    for file in files:
        try:
            plan = load_or_exit(file)
        except typer.Exit:
            failed += 1
            continue
        replicas = sum(a.replicas for a in plan.agents.values())
        edges = sum(len(a.inputs) for a in plan.agents.values())
        typer.echo(f"{file}: ok: graph {plan.name!r}, {len(plan.agents)} agents "
                   f"({replicas} replicas), {edges} edges, {len(plan.brokers)} broker(s)")
    if failed:
        if len(files) > 1:
            typer.secho(f"error: {failed} of {len(files)} graphs failed", fg="red", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(validate)
