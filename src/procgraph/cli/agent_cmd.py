"""``procgraph agent FILE AGENT REPLICA``: run one replica (what the supervisor spawns)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import fail, load_or_exit


def _alive_elsewhere(url: str, graph: str, name: str, replica: int) -> str | None:
    """Who runs ``name[replica]`` already (from its live heartbeat), or None.

    A heartbeat left by a dead process on this host does not count; an unreachable broker
    cannot tell (the replica then waits for it as usual).
    """
    import redis

    from procgraph.errors import BrokerUnavailable
    from procgraph.health import read_heartbeats

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        beat = read_heartbeats(client, graph, [(name, replica)]).get((name, replica))
    except BrokerUnavailable:
        return None
    finally:
        client.close()
    if beat is None:
        return None
    if beat.host == socket.gethostname():
        try:
            os.kill(beat.pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(beat.started))
    return (f"pid {beat.pid} on host {beat.host}, started {when}, heartbeat "
            f"{max(0.0, beat.age_s()):.1f}s ago")


def agent(
    file: Annotated[Path, typer.Argument(help="graph YAML file")],
    name: Annotated[str, typer.Argument(help="agent name in the graph")],
    replica: Annotated[int, typer.Argument(help="replica index")] = 0,
    broker: Annotated[list[str] | None, typer.Option(
        help="NAME=redis://host:port (default: from $PROCGRAPH_BROKERS or the graph)")] = None,
) -> None:
    """Run one replica of one agent in this process (normally started by `run`).

    Refuses a replica index outside the agent's ``replicas`` and, when not started by a
    supervisor, a replica that is already alive (its heartbeat is live).
    """
    from procgraph.brokers import resolve_broker_urls
    from procgraph.errors import ProcgraphError
    from procgraph.runtime import run_replica
    from procgraph.settings import load_settings

    plan = load_or_exit(file)
    if name not in plan.agents:
        raise fail(f"graph {plan.name!r} has no agent {name!r}; agents: {', '.join(plan.agents)}")
    count = plan.agents[name].replicas
    if not 0 <= replica < count:
        raise fail(f"agent {name!r} of graph {plan.name!r} has replicas: {count}; the replica "
                   f"index must be in 0..{count - 1}, not {replica}")
    explicit: dict[str, str] = {}
    for item in broker or []:
        key, _, url = item.partition("=")
        explicit[key] = url
    settings = load_settings()
    try:
        urls = resolve_broker_urls(plan, brokers=explicit, given=settings.brokers)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None
    if not settings.supervised:  # the supervisor clears a predecessor's heartbeat itself
        who = _alive_elsewhere(urls[plan.agents[name].broker], plan.name, name, replica)
        if who is not None:
            raise fail(f"{name}[{replica}] of graph {plan.name!r} is alive: {who}; stop it "
                       "(or the supervisor that runs it) first, or pick another replica")
    run_replica(plan, name, replica, urls)


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command(hidden=False)(agent)
