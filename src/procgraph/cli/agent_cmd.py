"""``procgraph agent FILE AGENT REPLICA``: run one replica (what the supervisor spawns)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import fail, load_or_exit


def agent(
    file: Annotated[Path, typer.Argument(help="graph YAML file")],
    name: Annotated[str, typer.Argument(help="agent name in the graph")],
    replica: Annotated[int, typer.Argument(help="replica index")] = 0,
    broker: Annotated[list[str] | None, typer.Option(
        help="NAME=redis://host:port (default: from $PROCGRAPH_BROKERS or the graph)")] = None,
) -> None:
    """Run one replica of one agent in this process (normally started by `run`)."""
    from procgraph.brokers import resolve_broker_urls
    from procgraph.errors import ProcgraphError
    from procgraph.runtime import run_replica
    from procgraph.settings import load_settings

    plan = load_or_exit(file)
    if name not in plan.agents:
        raise fail(f"graph {plan.name!r} has no agent {name!r}; agents: {', '.join(plan.agents)}")
    explicit: dict[str, str] = {}
    for item in broker or []:
        key, _, url = item.partition("=")
        explicit[key] = url
    try:
        urls = resolve_broker_urls(plan, brokers=explicit, given=load_settings().brokers)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None
    run_replica(plan, name, replica, urls)


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command(hidden=False)(agent)
