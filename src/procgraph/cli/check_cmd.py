"""``procgraph check GRAPH``: exit 0 when the agents' heartbeats are fresh, else 1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import broker_urls, fail, load_or_exit
from procgraph.errors import BrokerUnavailable
from procgraph.health import check_line


def check(
    file: Annotated[Path, typer.Argument(help="graph YAML file")],
    agent: Annotated[str | None, typer.Option(help="check only this agent")] = None,
    replica: Annotated[int | None, typer.Option(help="check only this replica")] = None,
    redis_url: Annotated[str | None, typer.Option(
        "--redis", help="URL for embedded brokers (default: $PROCGRAPH_REDIS)")] = None,
) -> None:
    """Check that every replica (or one) has a live heartbeat; for scripts and probes."""
    plan = load_or_exit(file)
    if agent is not None and agent not in plan.agents:
        raise fail(f"graph {plan.name!r} has no agent {agent!r}")
    try:
        result = check_line(plan, broker_urls(plan, redis_url), agent, replica)
    except BrokerUnavailable as exc:
        raise fail(str(exc)) from None
    if not result.ok:
        typer.echo(f"no heartbeat: {', '.join(result.missing)} ({len(result.alive)} alive)")
        raise typer.Exit(1)
    typer.echo(f"ok: {len(result.alive)} replica(s) alive")


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(check)
