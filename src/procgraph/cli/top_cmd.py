"""``procgraph top GRAPH``: a live table of every agent and port of a running graph.

Everything shown is read from the brokers, read-only: the heartbeats the replicas publish
(alive replicas, restarts, counts, p50 latency, time blocked by backpressure), the consumer
groups of the input streams (``XINFO GROUPS``: lag and pending) and the dead-letter streams.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from procgraph.cli.common import broker_urls, fail, load_or_exit
from procgraph.constants import dead_letter_key, heartbeat_key
from procgraph.graph import GraphPlan

BrokerErrors = (redis.ConnectionError, redis.TimeoutError)


@dataclass
class Row:
    """One line of the table: one port of one agent."""

    agent: str
    alive: int
    expected: int
    restarts: int
    port: str
    count: int | None = None
    rate: float | None = None
    lag: int | None = None
    pending: int | None = None
    dead: int | None = None
    p50_ms: float | None = None
    blocked_s: float | None = None


@dataclass
class _Seen:
    pid: Any
    started: Any
    count: int
    ts: float
    rate: float


class TopSampler:
    """Reads one snapshot of a graph's state per call; rates come from count deltas."""

    def __init__(self, plan: GraphPlan, urls: dict[str, str]) -> None:
        self.plan = plan
        self.urls = urls
        self.clients = {
            name: redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
            for name, url in urls.items()
        }
        self._seen: dict[tuple[str, int, str], _Seen] = {}

    def close(self) -> None:
        """Close the broker connections."""
        for client in self.clients.values():
            client.close()

    def check(self) -> None:
        """PING every broker; raise a readable typer.Exit naming the first one unreachable."""
        for name, client in self.clients.items():
            try:
                client.ping()
            except BrokerErrors as exc:
                raise fail(f"cannot reach broker {name!r} at {self.urls[name]}: {exc}") from None

    def _rate(self, key: tuple[str, int, str], hb: dict[str, Any], count: int) -> float:
        ts = float(hb.get("ts") or time.time())
        started = hb.get("started")
        prev = self._seen.get(key)
        if (prev is not None and prev.pid == hb.get("pid") and prev.started == started
                and count >= prev.count):
            if ts <= prev.ts:  # heartbeat not refreshed since the last look
                return prev.rate
            rate = (count - prev.count) / (ts - prev.ts)
        else:  # first look, or the replica restarted: its average since it started
            rate = count / max(ts - float(started or ts), 1e-3) if count else 0.0
        self._seen[key] = _Seen(hb.get("pid"), started, count, ts, rate)
        return rate

    def _group(self, broker: str, stream: str, group: str) -> tuple[int | None, int | None]:
        try:
            groups = self.clients[broker].xinfo_groups(stream)
        except redis.ResponseError:  # the stream does not exist (yet)
            return None, None
        for g in groups:
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == group:
                return g.get("lag"), g.get("pending")
        return None, None

    def _totals(self, agent: str, beats: list[tuple[int, dict[str, Any]]], direction: str,
                port: str) -> tuple[int | None, float | None, list[dict[str, Any]]]:
        """Count and rate summed over the live replicas, and each replica's port stats."""
        stats = [(i, hb, hb.get(direction, {}).get(port)) for i, hb in beats]
        stats = [(i, hb, s) for i, hb, s in stats if isinstance(s, dict)]
        if not stats:
            return None, None, []
        count = sum(int(s.get("count") or 0) for _, _, s in stats)
        rate = sum(self._rate((agent, i, f"{direction}:{port}"), hb, int(s.get("count") or 0))
                   for i, hb, s in stats)
        return count, rate, [s for _, _, s in stats]

    def sample(self) -> list[Row]:
        """One row per agent port (raises redis.ConnectionError when a broker is gone)."""
        rows: list[Row] = []
        for agent in self.plan.agents.values():
            keys = [heartbeat_key(self.plan.name, agent.name, i) for i in range(agent.replicas)]
            beats: list[tuple[int, dict[str, Any]]] = []
            for i, raw in enumerate(self.clients[agent.broker].mget(keys)):
                if raw is not None:
                    try:
                        beats.append((i, json.loads(raw)))
                    except ValueError:
                        continue
            base = {"agent": agent.name, "alive": len(beats), "expected": agent.replicas,
                    "restarts": sum(int(hb.get("restarts") or 0) for _, hb in beats)}

            for inp in agent.inputs:
                count, rate, stats = self._totals(agent.name, beats, "inputs", inp.port)
                lag, pending = self._group(inp.broker, inp.stream, agent.name)
                lat = [float(s["latency_ms"]) for s in stats if s.get("latency_ms") is not None]
                rows.append(Row(**base, port=f"in:{inp.port}", count=count,
                                rate=rate, lag=lag, pending=pending,
                                dead=self.clients[inp.broker].xlen(dead_letter_key(inp.stream)),
                                p50_ms=max(lat) if lat else None))
            for out in agent.outputs:
                count, rate, stats = self._totals(agent.name, beats, "outputs", out.port)
                blocked = [float(s.get("blocked_s") or 0) for s in stats]
                rows.append(Row(**base, port=f"out:{out.port}", count=count, rate=rate,
                                blocked_s=sum(blocked) if blocked else None))
            if not agent.inputs and not agent.outputs:
                rows.append(Row(**base, port="-"))
        return rows


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def render(plan: GraphPlan, rows: list[Row], note: str = "", plain: bool = False) -> Table:
    """The table ``top`` shows (``plain``: no colours)."""
    table = Table(title=f"graph {plan.name!r}  {time.strftime('%H:%M:%S')}", caption=note or None,
                  box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left",
                  collapse_padding=True, pad_edge=False)
    table.add_column("agent", no_wrap=True)
    for name in ("up", "rst"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("port", overflow="fold", min_width=8)
    for name in ("count", "msg/s", "lag", "pend", "dead", "p50ms", "blk s"):
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
            _num(r.dead) if plain or not r.dead else f"[red]{r.dead:,}[/red]",
            _num(r.p50_ms, "{:,.1f}"), _num(r.blocked_s, "{:,.2f}"),
        )
    return table


def top(
    file: Annotated[Path, typer.Argument(help="graph YAML file of the running line")],
    redis_url: Annotated[str | None, typer.Option(
        "--redis", envvar="PROCGRAPH_REDIS",
        help="URL of the embedded broker(s) (the one `run` prints)")] = None,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="print one snapshot and exit")] = False,
) -> None:
    """Show rate, lag, pending, dead letters, latency and restarts per agent and port."""
    plan = load_or_exit(file)
    sampler = TopSampler(plan, broker_urls(plan, redis_url))
    try:
        sampler.check()
        if once:
            console = Console(highlight=False, width=None if Console().is_terminal else 160)
            console.print(render(plan, sampler.sample(), plain=True))
            return
        _live(plan, sampler, interval)
    except BrokerErrors as exc:
        raise fail(f"lost the broker: {exc}") from None
    finally:
        sampler.close()


def _live(plan: GraphPlan, sampler: TopSampler, interval: float) -> None:
    from rich.live import Live

    rows = sampler.sample()
    note = "Ctrl-C to quit; msg/s from count changes between refreshes"
    try:
        with Live(render(plan, rows, note), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                try:
                    rows = sampler.sample()
                    text = note
                except BrokerErrors as exc:
                    text = f"[red]broker unreachable: {exc}; retrying[/red]"
                live.update(render(plan, rows, text), refresh=True)
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(top)
