"""``procgraph tap STREAM``: print the messages of a stream as they arrive."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from procgraph.cli.common import fail, ping_or_exit, stream_broker_url
from procgraph.codec import read_header
from procgraph.constants import ARRAY_FIELD_PREFIX, KEY_PREFIX
from procgraph.errors import CodecError
from procgraph.redact import redact, redact_url
from procgraph.safetext import printable

DEFAULT_URL = "redis://127.0.0.1:6379"
#: the cap of a printed data or arrays field, in characters
FIELD_LIMIT = 300
#: the cap with ``--full`` (a printed field is still one line, controls escaped)
FULL_LIMIT = 10_000_000


def stream_url(stream: str, override: str | None) -> str:
    """The broker URL for a stream key: ``--redis`` / ``$PROCGRAPH_REDIS``, else the running
    line of the stream's graph (:func:`procgraph.cli.common.stream_broker_url`)."""
    return stream_broker_url(stream, override)


def graph_of(stream: str) -> str | None:
    """The graph name of a ``pg:<graph>:...`` stream key, else None."""
    parts = stream.split(":")
    return parts[1] if len(parts) >= 3 and parts[0] == KEY_PREFIX and parts[1] else None


def missing_stream(client: Any, stream: str) -> typer.Exit:
    """``error: no stream X`` plus the streams of its line on this broker (to raise)."""
    from procgraph.health import line_streams

    graph = graph_of(stream)
    names = line_streams(client, graph) if graph else []
    if names:
        listing = "; streams of graph " + repr(graph) + ": " + ", ".join(
            printable(n, 200) for n in names)
    elif graph:
        listing = f"; graph {graph!r} has no streams on this broker (is the line running?)"
    else:
        listing = f"; a procgraph stream key looks like {KEY_PREFIX}:GRAPH:AGENT:PORT"
    return fail(f"no stream {printable(stream, 200)!r}{listing}; fix: name one of these "
                "(`procgraph streams GRAPH` lists them)")


def summarise_arrays(fields: Mapping[bytes, bytes], arrays: Any) -> dict[str, Any]:
    """Array descriptors without payloads: dtype, shape, encoding and bytes on the wire."""
    out: dict[str, Any] = {}
    for name, desc in (arrays.items() if isinstance(arrays, dict) else []):
        if not isinstance(desc, dict):
            out[str(name)] = "<bad descriptor>"
            continue
        payload = fields.get(f"{ARRAY_FIELD_PREFIX}{name}".encode())
        row = {k: desc.get(k) for k in ("dtype", "shape", "encoding", "ref") if k in desc}
        row["bytes"] = len(payload) if payload is not None else None
        out[str(name)] = row
    return out


def as_json(entry_id: bytes, fields: Mapping[bytes, bytes]) -> str:
    """One JSON object per entry: the whole header, arrays summarised (no payloads)."""
    doc: dict[str, Any] = {"entry_id": entry_id.decode("utf-8", "backslashreplace")}
    try:
        header = read_header(fields)
        header["arrays"] = summarise_arrays(fields, header.get("arrays", {}))
        doc.update(header)
    except Exception as exc:  # shown as such, never ends tap
        doc["undecodable"] = printable(exc)
    dead = {printable(k, 100): printable(v) for k, v in fields.items()
            if k.startswith(b"dead:")}
    if dead:
        doc["dead"] = dead
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, default=str)


def _describe_message(fields: Mapping[bytes, bytes], limit: int = FIELD_LIMIT) -> str:
    """``type key=... data [arrays]`` of a procgraph message; CodecError when it is not one."""
    h = read_header(fields)
    arrays = h.get("arrays", {})
    if not isinstance(arrays, dict):
        raise CodecError(f"'arrays' must be an object, got {type(arrays).__name__}")
    shapes: dict[str, str] = {}
    for name, desc in arrays.items():
        if not isinstance(desc, dict):
            raise CodecError(f"array {name!r}: descriptor must be an object")
        shapes[name] = f"{desc.get('dtype')}{desc.get('shape')}"
    data = printable(json.dumps(h.get("data", {}), separators=(",", ":")), limit)
    text = f"{printable(h.get('type'), 100)} key={printable(repr(h.get('key')), 200)} {data}"
    return f"{text} {printable(json.dumps(shapes), limit)}" if shapes else text


def describe(entry_id: bytes, fields: Mapping[bytes, bytes], limit: int = FIELD_LIMIT) -> str:
    """One line per entry: id, type, key and scalar fields; arrays as dtype+shape.

    An entry that is not a readable procgraph message shows as
    ``<id> <undecodable: reason>``; ``dead:*`` fields follow either way. Everything that
    comes from the entry is escaped and capped (:func:`procgraph.safetext.printable`) at
    ``limit`` characters per field.
    """
    try:
        body = _describe_message(fields, limit)
    except Exception as exc:  # any malformed entry is shown as such, never ends tap
        body = f"<undecodable: {printable(exc)}>"
    dead = "".join(f" {printable(k, 100)}={printable(v, max(limit, 200))}"
                   for k, v in fields.items() if k.startswith(b"dead:"))
    return f"{printable(entry_id, 100)} {body}{dead}"


def tap(
    stream: Annotated[str, typer.Argument(help="stream key, e.g. pg:minimal:counter:out")],
    redis_url: Annotated[str | None, typer.Option(
        "--redis", help="broker URL (default: $PROCGRAPH_REDIS, else the running line of the "
        "stream's graph)")] = None,
    count: Annotated[int, typer.Option(help="stop after N messages (0: never)")] = 0,
    from_start: Annotated[bool, typer.Option("--from-start", help="print old entries too")
                          ] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="one JSON object per message: the whole header, arrays summarised "
        "(dtype, shape, encoding, bytes)")] = False,
    full: Annotated[bool, typer.Option(
        "--full", help=f"do not cut long fields (default: {FIELD_LIMIT} characters)")] = False,
) -> None:
    """Print messages live, without joining any consumer group (read-only).

    A stream that does not exist is an error that lists the streams of its line.
    """
    import redis

    redis_url = stream_url(stream, redis_url)
    ping_or_exit({redis_url: redis_url})  # unreachable, wrong password, untrusted TLS: exit 1
    client = redis.Redis.from_url(redis_url)
    last: bytes | str = "0-0"
    seen = 0
    limit = FULL_LIMIT if full else FIELD_LIMIT
    try:
        if not client.exists(stream):
            raise missing_stream(client, stream)
        if not from_start:  # start after the newest entry now, so none is missed later
            newest: Any = client.xrevrange(stream, count=1)
            last = newest[0][0] if newest else "0-0"
        while count <= 0 or seen < count:
            reply: Any = client.xread({stream: last}, count=100, block=1000)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    typer.echo(as_json(entry_id, fields) if json_out
                               else describe(entry_id, fields, limit))
                    last = entry_id
                    seen += 1
                    if 0 < count <= seen:
                        return
    except redis.ConnectionError as exc:
        typer.secho(f"error: cannot reach {redact_url(redis_url)}: {printable(redact(str(exc)))}",
                    fg="red", err=True)
        raise typer.Exit(1) from None
    except redis.ResponseError as exc:
        fix = ("; fix: name a stream key (`procgraph graph` lists them)"
               if str(exc).startswith("WRONGTYPE") else "")
        typer.secho(f"error: cannot read stream {printable(stream)!r}: "
                    f"{printable(redact(str(exc)))}{fix}", fg="red", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(tap)
