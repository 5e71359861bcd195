"""``procgraph check GRAPH``: exit 0 when the agents' heartbeats are fresh, else 1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import broker_urls, fail, load_or_exit
from procgraph.constants import heartbeat_key


def check(
    file: Annotated[Path, typer.Argument(help="graph YAML file")],
    agent: Annotated[str | None, typer.Option(help="check only this agent")] = None,
    replica: Annotated[int | None, typer.Option(help="check only this replica")] = None,
    redis_url: Annotated[str | None, typer.Option(
        "--redis", envvar="PROCGRAPH_REDIS", help="URL for embedded brokers")] = None,
) -> None:
    """Check that every replica (or one) has a live heartbeat; for scripts and probes."""
    import redis

    plan = load_or_exit(file)
    urls = broker_urls(plan, redis_url)
    if agent is not None and agent not in plan.agents:
        raise fail(f"graph {plan.name!r} has no agent {agent!r}")
    missing: list[str] = []
    alive = 0
    for a in plan.agents.values():
        if agent is not None and a.name != agent:
            continue
        url = urls[a.broker]
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        indexes = [replica] if replica is not None else list(range(a.replicas))
        try:
            values = client.mget([heartbeat_key(plan.name, a.name, i) for i in indexes])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise fail(f"cannot reach broker {a.broker!r} at {url}: {exc}") from None
        finally:
            client.close()
        for i, value in zip(indexes, values, strict=True):
            if value is None:
                missing.append(f"{a.name}[{i}]")
            else:
                alive += 1
    if missing:
        typer.echo(f"no heartbeat: {', '.join(missing)} ({alive} alive)")
        raise typer.Exit(1)
    typer.echo(f"ok: {alive} replica(s) alive")


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(check)
