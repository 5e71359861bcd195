"""``procgraph audit GRAPH``: account for every entry on every edge of a line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from procgraph.audit import LineAudit, audit_line
from procgraph.cli.common import (
    broker_urls,
    fail,
    load_or_exit,
    ping_or_exit,
    redis_url_or_env,
    running_brokers,
)
from procgraph.constants import EMBEDDED
from procgraph.errors import BrokerError, ProcgraphError
from procgraph.safetext import printable

_COLUMNS = ("produced", "acked", "dead", "pending", "unread", "dropped", "unexplained")


def render(result: LineAudit) -> Table:
    """The table ``audit`` prints: one row per edge (the verdict and notes: :func:`footer`)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("edge (stream -> agent)", overflow="fold")
    table.add_column("policy")
    for name in _COLUMNS:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("lost", justify="right")
    for e in result.edges:
        cells = ["-"] * len(_COLUMNS) if not e.exists else [
            f"{getattr(e, name):,}" for name in _COLUMNS]
        table.add_row(escape(printable(f"{e.stream} -> {e.group}", 300)), e.policy, *cells,
                      str(e.broker_data_lost))
    return table


def footer(result: LineAudit) -> list[str]:
    """The verdict line, then one line per note of each edge."""
    bad = [f"{e.stream} -> {e.group}" for e in result.edges if not e.ok]
    verdict = ("every entry accounted for" if not bad else
               "UNEXPLAINED entries on " + ", ".join(bad))
    notes = [f"{e.stream} -> {e.group}: {n}" for e in result.edges for n in e.notes]
    if any(e.broker_data_lost for e in result.edges):
        notes.append("lost: times the edge's broker lost its data (broker_data_lost)")
    return [verdict, *notes]


def audit(
    file: Annotated[Path, typer.Argument(help="graph YAML file of the line")],
    redis_url: Annotated[str | None, typer.Option(
        "--redis", help="URL of the broker(s) (default: $PROCGRAPH_REDIS)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the audit as JSON")] = False,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="the stopped line's state folder (as given to run)")] = None,
    broker_kind: Annotated[str, typer.Option(
        "--broker-kind", help="server that opens a stopped line's data: valkey or redis "
        "(as the line ran)")] = "valkey",
) -> None:
    """Account for every entry of every edge; exit 1 if a lossless edge lost any.

    A running line is audited live. A stopped line with embedded durable brokers is audited
    from their data: each is started on its data folder for the audit, then stopped again.
    """
    plan = load_or_exit(file)
    if broker_kind not in ("valkey", "redis"):
        raise fail(f"--broker-kind {broker_kind!r}: use valkey or redis")
    stopped = (redis_url_or_env(redis_url) is None
               and not running_brokers(plan.name, plan.file)
               and any(spec.url == EMBEDDED for spec in plan.brokers.values()))
    try:
        if stopped:
            from procgraph.stoppedline import open_stopped_line

            with open_stopped_line(plan, state_dir, broker_kind,
                                   say=lambda line: typer.echo(line, err=True)) as urls:
                result = audit_line(plan, urls)
        else:
            urls = broker_urls(plan, redis_url)
            ping_or_exit(urls)
            result = audit_line(plan, urls)
    except (BrokerError, ProcgraphError) as exc:
        raise fail(" ".join(str(exc).split())) from None
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        typer.echo(f"audit of graph {result.graph!r}: produced = acked + dead + pending + "
                   "unread + dropped + unexplained")
        Console(highlight=False, width=None if Console().is_terminal else 160).print(
            render(result))
        for line in footer(result):
            typer.echo(printable(line, 1000))
    if not result.ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the command(s) to the CLI."""
    app.command()(audit)
