"""``procgraph agent FILE AGENT REPLICA``: run one replica (what the supervisor spawns)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import fail, load_or_exit
from procgraph.constants import BROKERS_ENV


def agent(
    file: Annotated[Path, typer.Argument(help="graph YAML file")],
    name: Annotated[str, typer.Argument(help="agent name in the graph")],
    replica: Annotated[int, typer.Argument(help="replica index")] = 0,
    broker: Annotated[list[str] | None, typer.Option(
        help="NAME=redis://host:port (default: from $PROCGRAPH_BROKERS or the graph)")] = None,
) -> None:
    """Run one replica of one agent in this process (normally started by `run`)."""
    from procgraph.runtime import AgentRunner, configure_logging

    plan = load_or_exit(file)
    if name not in plan.agents:
        raise fail(f"graph {plan.name!r} has no agent {name!r}; agents: {', '.join(plan.agents)}")
    urls = {n: b.url for n, b in plan.brokers.items() if b.url != "embedded"}
    urls.update(json.loads(os.environ.get(BROKERS_ENV, "{}")))
    for item in broker or []:
        key, _, url = item.partition("=")
        urls[key] = url
    configure_logging(name, replica, supervised=os.environ.get("PROCGRAPH_SUPERVISED") == "1")
    runner = AgentRunner(plan, name, replica, urls)
    runner.install_signal_handlers()
    runner.run()


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command(hidden=False)(agent)
