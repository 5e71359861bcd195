"""``procgraph top GRAPH``: a live table of every agent and port of a running graph.

The numbers come from :class:`procgraph.monitor.LineMonitor` (heartbeats, edges, dead-letter
streams and line counters, read-only through procgraph.health); this module only draws them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from procgraph.cli.common import broker_urls, fail, load_or_exit, ping_or_exit
from procgraph.errors import BrokerError, BrokerUnavailable
from procgraph.graph import GraphPlan
from procgraph.monitor import LineMonitor, Row
from procgraph.redact import redact


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _counters_note(counters: dict[str, int] | None, plain: bool) -> str:
    if not counters:
        return ""
    text = "line counters: " + ", ".join(f"{k}={v:,}" for k, v in sorted(counters.items()))
    # names come from the broker: drawn as text, never read as rich markup ("[/foo]")
    return escape(text) if plain else f"[red]{escape(text)}[/red]"


def _alarm(value: int | None, plain: bool) -> str:
    return _num(value) if plain or not value else f"[red]{value:,}[/red]"


def render(plan: GraphPlan, rows: list[Row], note: str = "", plain: bool = False,
           counters: dict[str, int] | None = None) -> Table:
    """The table ``top`` shows (``plain``: no colours; ``counters``: the line counters)."""
    caption = "\n".join(t for t in (_counters_note(counters, plain), note) if t)
    table = Table(title=f"graph {plan.name!r}  {time.strftime('%H:%M:%S')}",
                  caption=caption or None,
                  box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left",
                  collapse_padding=True, pad_edge=False)
    table.add_column("agent", no_wrap=True)
    for name in ("up", "rst"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("port", overflow="fold", min_width=8)
    for name in ("count", "msg/s", "lag", "pend", "dead", "drop", "recl", "p50ms", "blk s"):
        table.add_column(name, justify="right", no_wrap=True)
    last = None
    for r in rows:
        first = r.agent != last
        last = r.agent
        alive = f"{r.alive}/{r.expected}"
        if not plain and r.alive < r.expected:
            alive = f"[red]{alive}[/red]"
        table.add_row(
            r.agent if first else "", alive if first else "",
            str(r.restarts) if first else "", r.port, _num(r.count), _num(r.rate, "{:,.1f}"),
            _num(r.lag), _num(r.pending),
            _alarm(r.dead, plain), _alarm(r.dropped, plain), _num(r.reclaimed),
            _num(r.p50_ms, "{:,.1f}"), _num(r.blocked_s, "{:,.2f}"),
        )
    return table


def top(
    file: Annotated[Path, typer.Argument(help="graph YAML file of the running line")],
    redis_url: Annotated[str | None, typer.Option(
        "--redis",
        help="URL of the embedded broker(s) (the one `run` prints; default: $PROCGRAPH_REDIS)")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="print one snapshot and exit")] = False,
) -> None:
    """Show rate, lag, pending, dead letters, drops, reclaims, latency and restarts per port."""
    plan = load_or_exit(file)
    urls = broker_urls(plan, redis_url)
    ping_or_exit(urls)  # a wrong password or TLS certificate: one error line, no retrying
    with LineMonitor(plan, urls) as monitor:
        try:
            monitor.ping()
        except BrokerError as exc:
            raise fail(str(exc)) from None
        try:
            if once:
                console = Console(highlight=False, width=None if Console().is_terminal else 160)
                console.print(render(plan, monitor.sample(), plain=True,
                                     counters=monitor.line_counters()))
                return
            _live(plan, monitor, interval)
        except BrokerError as exc:
            raise fail(f"lost the broker: {exc}") from None


def _live(plan: GraphPlan, sampler: LineMonitor, interval: float) -> None:
    from rich.live import Live

    rows, counters = sampler.sample(), sampler.line_counters()
    note = "Ctrl-C to quit; msg/s from count changes between refreshes"
    try:
        with Live(render(plan, rows, note, counters=counters), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                try:
                    rows, counters = sampler.sample(), sampler.line_counters()
                    text = note
                except BrokerUnavailable as exc:
                    text = f"[red]broker unreachable: {escape(redact(str(exc)))}; retrying[/red]"
                live.update(render(plan, rows, text, counters=counters), refresh=True)
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(top)
