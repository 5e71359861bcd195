"""``procgraph ps`` and ``procgraph stop``: list and stop the running lines."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import fail
from procgraph.redact import redact_url
from procgraph.runs import RunRecord, find_runs, pid_alive, runs_of
from procgraph.safetext import printable

#: how long ``stop`` waits for a line to end by default
STOP_TIMEOUT_S = 30.0


def uptime(seconds: float) -> str:
    """``12s``, ``3m05s``, ``2h07m``, ``3d04h``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _text(value: str | None, limit: int = 200) -> str:
    return "-" if not value else printable(value, limit=limit)


def _row(r: RunRecord) -> list[str]:
    state = "stale" if r.stale else r.state
    brokers = " ".join(f"{name}={redact_url(url)}" for name, url in r.brokers.items())
    graph = r.graph if r.node is None else f"{r.graph}@{r.node}"
    return [_text(graph, 60), str(r.pid), _text(r.host, 60), state, uptime(r.uptime_s),
            _text(brokers, 300), _text(r.hmi_url and redact_url(r.hmi_url)), _text(r.file, 300)]


def ps(
    all_: Annotated[bool, typer.Option("--all", "-a", help="also list stale records (the "
                                       "supervisor is gone without removing its record)")
                    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """List the lines running on this machine (from their run records)."""
    records = find_runs(include_stale=all_)
    if as_json:
        for r in records:
            typer.echo(json.dumps({
                "graph": r.graph, "node": r.node, "pid": r.pid, "host": r.host,
                "state": "stale" if r.stale else r.state, "started": r.started,
                "uptime_s": round(r.uptime_s, 1),
                "brokers": {k: redact_url(v) for k, v in r.brokers.items()},
                "hmi_url": r.hmi_url, "metrics_url": r.metrics_url, "file": r.file,
                "record": str(r.path)}))
        return
    if not records:
        typer.echo("no running lines (start one with: procgraph run -d FILE)")
        return
    header = ["GRAPH", "PID", "HOST", "STATE", "UPTIME", "BROKERS", "HMI", "FILE"]
    rows = [header, *(_row(r) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
                   + "  " + row[-1])


def _is_supervisor(r: RunRecord) -> bool:
    """True when ``r.pid`` is still a ``procgraph run`` (not a reused pid)."""
    try:
        cmd = Path(f"/proc/{r.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid_alive(r.pid)  # no /proc: trust the record
    return any(b"procgraph" in part for part in cmd) and b"run" in cmd


def stop(
    target: Annotated[str, typer.Argument(help="graph name or graph file of the running line")],
    timeout: Annotated[float, typer.Option(
        "--timeout", help="give up after SECONDS if the line has not stopped")] = STOP_TIMEOUT_S,
) -> None:
    """Stop a running line cleanly: SIGTERM to its supervisor, then wait until it is gone."""
    shown = printable(target, limit=200)
    records = runs_of(target)
    if not records:
        stale = runs_of(target, include_stale=True)
        hint = (f" (a stale record is left at {stale[0].path}: its supervisor pid "
                f"{stale[0].pid} is gone)") if stale else ""
        raise fail(f"no running line {shown!r} found on this machine{hint}; "
                   "procgraph ps lists the running lines")
    remote = [r for r in records if not r.local]
    if remote:
        raise fail(f"line {shown!r} runs on host {printable(remote[0].host, limit=100)!r} "
                   f"(pid {remote[0].pid}): run procgraph stop there")
    for r in records:
        if not _is_supervisor(r):
            raise fail(f"pid {r.pid} of the record {r.path} is not a procgraph run any more: "
                       "remove that stale record")
    started = time.monotonic()
    for r in records:
        try:
            os.kill(r.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        except PermissionError:
            raise fail(f"not allowed to signal pid {r.pid} (graph {r.graph!r}): stop it as "
                       "the user who started it") from None
        typer.echo(f"stopping graph {r.graph!r} (pid {r.pid}) ...")
    deadline = started + timeout
    left = list(records)
    while left and time.monotonic() < deadline:
        left = [r for r in left if pid_alive(r.pid)]
        if left:
            time.sleep(0.1)
    if left:
        pids = ", ".join(str(r.pid) for r in left)
        raise fail(f"line {shown!r} did not stop within {timeout:g}s (pid {pids} still "
                   f"runs): wait, or run procgraph stop {shown} again, or kill -9 {pids}")
    for r in records:
        typer.echo(f"stopped graph {r.graph!r} (pid {r.pid}) in "
                   f"{time.monotonic() - started:.1f}s")


def register(app: typer.Typer) -> None:
    """Add the commands to the CLI."""
    app.command()(ps)
    app.command()(stop)
