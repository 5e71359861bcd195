"""``procgraph run FILE``: start brokers and agents, supervise until stopped."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from procgraph.cli.common import fail, load_or_exit
from procgraph.errors import ProcgraphError
from procgraph.supervisor import Supervisor


def run(
    file: Annotated[Path, typer.Argument(help="graph YAML file")],
    duration: Annotated[float | None, typer.Option(help="stop after SECONDS")] = None,
    node: Annotated[str | None, typer.Option(help="start only agents placed on NODE")] = None,
    redis: Annotated[str | None, typer.Option(
        "--redis", help="use this redis:// URL for every embedded broker")] = None,
    broker_kind: Annotated[str, typer.Option(
        "--broker-kind", help="embedded server: valkey (wheel) or redis (redis-server)")
    ] = "valkey",
) -> None:
    """Validate the graph, start its brokers and agent replicas, restart what dies."""
    plan = load_or_exit(file)
    sup = Supervisor(plan, node=node, redis_url=redis, broker_kind=broker_kind)

    def on_signal(signum: int, frame: Any) -> None:
        sup.say("supervisor", f"{signal.Signals(signum).name}: stopping")
        sup.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        code = sup.run(duration)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(run)
