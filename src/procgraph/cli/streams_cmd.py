"""``procgraph streams`` and ``procgraph pub``: list a line's streams, inject one message."""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from procgraph.cli.common import broker_urls, fail, load_or_exit, ping_or_exit
from procgraph.cli.tap_cmd import missing_stream, stream_url
from procgraph.constants import DEFAULT_MAXLEN, KEY_PREFIX, dead_letter_key
from procgraph.message import Message, known_type
from procgraph.redact import redact_url
from procgraph.safetext import printable


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _added(client: Any, streams: list[str]) -> dict[str, int | None]:
    """entries-added of each stream (XINFO STREAM), None where the broker does not say."""
    pipe = client.pipeline(transaction=False)
    for s in streams:
        pipe.xinfo_stream(s)
    out: dict[str, int | None] = {}
    for s, info in zip(streams, pipe.execute(raise_on_error=False), strict=True):
        n = info.get("entries-added") if isinstance(info, dict) else None
        out[s] = int(n) if n is not None else None
    return out


def stream_rows(client: Any, streams: list[str], interval_s: float) -> list[dict[str, Any]]:
    """One row per stream: type, length, rate (entries/s over ``interval_s``), groups, lag,
    pending and dead letters."""
    from procgraph.codec import read_header

    before = _added(client, streams)
    t0 = time.monotonic()
    if interval_s > 0:
        time.sleep(interval_s)
    after = _added(client, streams)
    dt = time.monotonic() - t0
    rows: list[dict[str, Any]] = []
    for s in streams:
        newest: Any = client.xrevrange(s, count=1)
        kind = "-"
        if newest:
            try:
                h = read_header(newest[0][1])
                kind = f"{printable(h.get('type'), 60)}/v{printable(h.get('type_version'), 10)}"
            except Exception:  # not a procgraph message: shown, never fatal
                kind = "<undecodable>"
        try:
            groups: Any = client.xinfo_groups(s)
        except Exception:  # trimmed away meanwhile
            groups = []
        names = [printable(_text(g.get("name")), 60) for g in groups]
        lags = [g.get("lag") for g in groups]
        b, a = before.get(s), after.get(s)
        rows.append({
            "stream": s, "type": kind, "length": int(client.xlen(s)),
            "rate_per_s": round((a - b) / dt, 1)
            if a is not None and b is not None and interval_s > 0 and dt > 0 else None,
            "groups": names,
            "lag": None if any(x is None for x in lags) else sum(int(x) for x in lags),
            "pending": sum(int(g.get("pending") or 0) for g in groups),
            "dead_letters": int(client.xlen(dead_letter_key(s))),
        })
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    head = ["STREAM", "TYPE", "LENGTH", "RATE/s", "GROUPS", "LAG", "PENDING", "DEAD"]
    body = [[printable(r["stream"], 120), r["type"], str(r["length"]),
             "-" if r["rate_per_s"] is None else f"{r['rate_per_s']:g}",
             ",".join(r["groups"]) or "-", "-" if r["lag"] is None else str(r["lag"]),
             str(r["pending"]), str(r["dead_letters"])] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [head, *body])


def streams(
    line: Annotated[str, typer.Argument(metavar="GRAPH", help="graph YAML file or graph name")],
    redis_url: Annotated[str | None, typer.Option(
        "--redis", help="broker URL (default: the running line's, else $PROCGRAPH_REDIS)")
                         ] = None,
    interval: Annotated[float, typer.Option(
        min=0, help="seconds between the two samples the rate comes from")] = 1.0,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON list instead of a table")
                        ] = False,
) -> None:
    """Every stream of a line: message type, length, rate, groups, lag, pending, dead letters."""
    import redis

    if line.endswith((".yaml", ".yml")) or Path(line).is_file():
        if not Path(line).is_file():
            raise fail(f"graph file {line} does not exist")
        plan = load_or_exit(Path(line))
        graph, urls = plan.name, list(dict.fromkeys(broker_urls(plan, redis_url).values()))
    else:
        graph, urls = line, [stream_url(f"{KEY_PREFIX}:{line}:", redis_url)]
    ping_or_exit({u: u for u in urls})
    from procgraph.health import line_streams

    rows: list[dict[str, Any]] = []
    for url in urls:
        client = redis.Redis.from_url(url)
        try:
            names = line_streams(client, graph)
            for row in stream_rows(client, names, interval):
                row["broker"] = redact_url(url)
                rows.append(row)
        finally:
            client.close()
    if json_out:
        typer.echo(json.dumps(rows, indent=1))
    elif not rows:
        raise fail(f"graph {graph!r} has no streams on {', '.join(map(redact_url, urls))}: "
                   "is the line running? (`procgraph ps`; or give --redis)")
    else:
        typer.echo(_table(rows))


def message_class(name: str) -> type[Message]:
    """A registered message type name (``Reading``, ``Frame``) or ``module:Class``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        if "" not in sys.path:
            sys.path.insert(0, "")  # a module beside the graph, as `run` finds it
        try:
            found = getattr(importlib.import_module(module_name), attr, None)
        except ImportError as exc:
            raise fail(f"--type {name}: cannot import {module_name!r}: {printable(exc)}; "
                       "fix: run from the graph's folder or set PYTHONPATH") from None
        if not (isinstance(found, type) and issubclass(found, Message)):
            raise fail(f"--type {name}: {attr!r} is not a Message subclass in {module_name}")
        return found
    cls = known_type(name)
    if cls is None and "" not in sys.path:
        sys.path.insert(0, "")  # agents/ of a project checkout
    for module_name in ("procgraph.examples", "agents.messages"):
        if cls is not None:
            break
        try:
            importlib.import_module(module_name)
        except ImportError:
            continue
        cls = known_type(name)
    if cls is None:
        raise fail(f"--type {name}: no message type of that name is registered; fix: give "
                   "module:Class (e.g. agents.messages:Trigger)")
    return cls


def build_message(cls: type[Message], text: str, key: str | None) -> Message:
    """Validate ``--json`` text against ``cls``; array fields may be given as nested lists."""
    import numpy as np
    from pydantic import ValidationError

    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"--json is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise fail("--json must be a JSON object, e.g. '{\"n\": 1}'")
    for f in cls.array_fields:
        if isinstance(values.get(f), list):
            values[f] = np.asarray(values[f])
    if key is not None:
        values["key"] = key
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(message)'}: {e['msg']}"
                             for e in exc.errors())
        raise fail(f"--json does not fit {cls.type_label()}: {printable(problems, 1000)}"
                   ) from None


def pub(
    stream: Annotated[str, typer.Argument(help="stream key, e.g. pg:line:trigger:out")],
    type_name: Annotated[str, typer.Option(
        "--type", help="message type: a registered name (Reading) or module:Class")],
    json_text: Annotated[str, typer.Option("--json", help="the message's fields as JSON")
                         ] = "{}",
    key: Annotated[str | None, typer.Option(help="the message key (part id)")] = None,
    create: Annotated[bool, typer.Option(
        "--create", help="write even when the stream does not exist yet")] = False,
    redis_url: Annotated[str | None, typer.Option(
        "--redis", help="broker URL (default: the running line's, else $PROCGRAPH_REDIS)")
                         ] = None,
) -> None:
    """Inject one message into a stream: validated against its type, encoded, XADDed."""
    import redis

    from procgraph.codec import encode
    from procgraph.errors import CodecError

    cls = message_class(type_name)
    msg = build_message(cls, json_text, key)
    try:
        fields = encode(msg)
    except CodecError as exc:
        raise fail(f"cannot encode the message: {exc}") from None
    url = stream_url(stream, redis_url)
    ping_or_exit({url: url})
    client = redis.Redis.from_url(url)
    try:
        if not create and not client.exists(stream):
            raise missing_stream(client, stream)
        entry: Any = client.xadd(stream, fields, maxlen=DEFAULT_MAXLEN,  # type: ignore[arg-type]
                                 approximate=True)
    except redis.ResponseError as exc:
        raise fail(f"cannot write to {printable(stream)!r}: {printable(exc)}") from None
    finally:
        client.close()
    typer.echo(f"{_text(entry)} {cls.type_label()} key={msg.key!r} -> {printable(stream)}")


def register(app: typer.Typer) -> None:
    """Add the command(s) to the CLI."""
    app.command()(streams)
    app.command()(pub)
