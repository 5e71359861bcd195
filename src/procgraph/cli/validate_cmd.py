"""``procgraph validate FILE``: check a graph without starting anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import load_or_exit


def validate(file: Annotated[Path, typer.Argument(help="graph YAML file")]) -> None:
    """Check a graph: YAML, keys, imports, params, ports and message types of every edge."""
    plan = load_or_exit(file)
    replicas = sum(a.replicas for a in plan.agents.values())
    edges = sum(len(a.inputs) for a in plan.agents.values())
    typer.echo(f"{file}: ok: graph {plan.name!r}, {len(plan.agents)} agents "
               f"({replicas} replicas), {edges} edges, {len(plan.brokers)} broker(s)")


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(validate)
