"""``procgraph graph FILE``: draw the graph as Mermaid or Graphviz DOT."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import load_or_exit
from procgraph.graph import GraphPlan


def to_mermaid(plan: GraphPlan) -> str:
    """Mermaid flowchart: one node per agent, one edge per wire labelled with ports."""
    lines = ["flowchart LR"]
    for a in plan.agents.values():
        label = f"{a.name}<br/><small>{a.class_path.split(':')[-1]}"
        label += f" x{a.replicas}" if a.replicas > 1 else ""
        lines.append(f'    {a.name}["{label}</small>"]')
    for a in plan.agents.values():
        for inp in a.inputs:
            src, port = inp.source.split(".", 1)
            arrow = "-.->" if inp.policy == "latest" else "-->"
            lines.append(f"    {src} {arrow}|{port} → {inp.port}| {a.name}")
    return "\n".join(lines)


def to_dot(plan: GraphPlan) -> str:
    """Graphviz DOT of the same graph."""
    lines = [f'digraph "{plan.name}" {{', "  rankdir=LR; node [shape=box];"]
    for a in plan.agents.values():
        lines.append(f'  "{a.name}" [label="{a.name}\\n{a.class_path.split(":")[-1]}"];')
    for a in plan.agents.values():
        for inp in a.inputs:
            src, port = inp.source.split(".", 1)
            style = ' style="dashed"' if inp.policy == "latest" else ""
            lines.append(f'  "{src}" -> "{a.name}" [label="{port} → {inp.port}"{style}];')
    lines.append("}")
    return "\n".join(lines)


def graph(
    file: Annotated[Path, typer.Argument(help="graph YAML file")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="mermaid or dot")] = "mermaid",
) -> None:
    """Print the graph as Mermaid (default) or Graphviz DOT; dashed edges are 'latest'."""
    plan = load_or_exit(file)
    if fmt not in ("mermaid", "dot"):
        raise typer.BadParameter("use mermaid or dot", param_hint="--format")
    typer.echo(to_mermaid(plan) if fmt == "mermaid" else to_dot(plan))


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(graph)
