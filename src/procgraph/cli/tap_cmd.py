"""``procgraph tap STREAM``: print the messages of a stream as they arrive."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from procgraph.cli.common import ping_or_exit, redis_url_or_env
from procgraph.codec import read_header
from procgraph.errors import CodecError
from procgraph.redact import redact, redact_url
from procgraph.safetext import printable

DEFAULT_URL = "redis://127.0.0.1:6379"
#: the cap of a printed data or arrays field, in characters
FIELD_LIMIT = 300


def _describe_message(fields: Mapping[bytes, bytes]) -> str:
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
    data = printable(json.dumps(h.get("data", {}), separators=(",", ":")), FIELD_LIMIT)
    text = f"{printable(h.get('type'), 100)} key={printable(repr(h.get('key')), 200)} {data}"
    return f"{text} {printable(json.dumps(shapes), FIELD_LIMIT)}" if shapes else text


def describe(entry_id: bytes, fields: Mapping[bytes, bytes]) -> str:
    """One line per entry: id, type, key and scalar fields; arrays as dtype+shape.

    An entry that is not a readable procgraph message shows as
    ``<id> <undecodable: reason>``; ``dead:*`` fields follow either way. Everything that
    comes from the entry is escaped and capped (:func:`procgraph.safetext.printable`).
    """
    try:
        body = _describe_message(fields)
    except Exception as exc:  # any malformed entry is shown as such, never ends tap
        body = f"<undecodable: {printable(exc)}>"
    dead = "".join(f" {printable(k, 100)}={printable(v)}"
                   for k, v in fields.items() if k.startswith(b"dead:"))
    return f"{printable(entry_id, 100)} {body}{dead}"


def tap(
    stream: Annotated[str, typer.Argument(help="stream key, e.g. pg:minimal:counter:out")],
    redis_url: Annotated[str | None, typer.Option(
        "--redis", help="broker URL (the one `run` prints; default: $PROCGRAPH_REDIS, else "
        f"{DEFAULT_URL})")] = None,
    count: Annotated[int, typer.Option(help="stop after N messages (0: never)")] = 0,
    from_start: Annotated[bool, typer.Option("--from-start", help="print old entries too")
                          ] = False,
) -> None:
    """Print messages live, without joining any consumer group (read-only)."""
    import redis

    redis_url = redis_url_or_env(redis_url) or DEFAULT_URL
    ping_or_exit({redis_url: redis_url})  # unreachable, wrong password, untrusted TLS: exit 1
    client = redis.Redis.from_url(redis_url)
    last: bytes | str = "0-0"
    seen = 0
    try:
        if not from_start:  # start after the newest entry now, so none is missed later
            newest: Any = client.xrevrange(stream, count=1)
            last = newest[0][0] if newest else "0-0"
        while count <= 0 or seen < count:
            reply: Any = client.xread({stream: last}, count=100, block=1000)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    typer.echo(describe(entry_id, fields))
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
