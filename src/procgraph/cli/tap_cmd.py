"""``procgraph tap STREAM``: print the messages of a stream as they arrive."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from procgraph.cli.common import redis_url_or_env
from procgraph.codec import read_header

DEFAULT_URL = "redis://127.0.0.1:6379"


def describe(entry_id: bytes, fields: dict[bytes, bytes]) -> str:
    """One line per entry: id, type, key and scalar fields; arrays as dtype+shape."""
    try:
        h = read_header(fields)
    except Exception as exc:
        return f"{entry_id.decode()} <not a procgraph message: {exc}>"
    arrays = {k: f"{v.get('dtype')}{v.get('shape')}" for k, v in h.get("arrays", {}).items()}
    data = json.dumps(h.get("data", {}), separators=(",", ":"))
    if len(data) > 300:
        data = data[:297] + "..."
    extra = "".join(
        f" {k.decode()}={v.decode(errors='replace')}"
        for k, v in fields.items() if k.startswith(b"dead:")
    )
    return (f"{entry_id.decode()} {h.get('type')} key={h.get('key')!r} {data}"
            f"{' ' + json.dumps(arrays) if arrays else ''}{extra}")


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
        typer.secho(f"error: cannot reach {redis_url}: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(tap)
