"""``procgraph run FILE``: start brokers and agents, supervise until stopped."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import fail, load_or_exit, redis_url_or_env
from procgraph.console import STOP_SIGNALS
from procgraph.errors import ProcgraphError
from procgraph.redact import redact_url
from procgraph.supervisor import CONNECT_TIMEOUT_S, Supervisor


def run(
    file: Annotated[Path, typer.Argument(help="graph YAML file")],
    duration: Annotated[float | None, typer.Option(help="stop after SECONDS")] = None,
    node: Annotated[str | None, typer.Option(help="start only agents placed on NODE")] = None,
    redis: Annotated[str | None, typer.Option(
        "--redis", help="use this redis:// URL for every embedded broker (default: "
        "$PROCGRAPH_REDIS; a URL with a password belongs there: every user can read a "
        "command line)")] = None,
    broker_kind: Annotated[str, typer.Option(
        "--broker-kind", help="embedded server: valkey (wheel) or redis (redis-server)")
    ] = "valkey",
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="the line's state folder (broker data, lock); default "
        "$XDG_STATE_HOME/procgraph/GRAPH or ~/.local/state/procgraph/GRAPH")] = None,
    connect_timeout: Annotated[float, typer.Option(
        "--connect-timeout", help="give up after SECONDS when a broker cannot be reached "
        "at start")] = CONNECT_TIMEOUT_S,
) -> None:
    """Validate the graph, start its brokers and agent replicas, restart what dies.

    SIGINT (Ctrl-C), SIGTERM and SIGHUP stop the line; a second run of the same graph is
    refused while this one runs.
    """
    plan = load_or_exit(file)
    if redis is not None and redact_url(redis) != redis:
        typer.secho("warning: --redis carries a password, which every user of this machine "
                    "can read in ps: set $PROCGRAPH_REDIS instead (run reads it when --redis "
                    "is not given)", fg=typer.colors.YELLOW, err=True)
    sup = Supervisor(plan, node=node, redis_url=redis_url_or_env(redis), broker_kind=broker_kind,
                     state_dir=state_dir)
    sup.handle_signals()
    try:
        code = sup.run(duration, connect_timeout_s=connect_timeout)
    except ProcgraphError as exc:
        raise fail(" ".join(str(exc).split())) from None
    finally:  # the line is stopped: later signals (GNU timeout sends two) change nothing,
        for signum in STOP_SIGNALS:  # also not while the interpreter exits
            signal.signal(signum, signal.SIG_IGN)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(run)
