"""``procgraph record`` and ``procgraph replay``: streams to a file and back.

A thin shell over :mod:`procgraph.recording` (``Recorder``, ``replay``; the file format is
described there and in docs/cli.md): this module parses arguments and draws progress bars.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import redis
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from procgraph.cli.common import (
    broker_urls,
    fail,
    load_or_exit,
    ping_or_exit,
    redis_url_or_env,
)
from procgraph.errors import BrokerError, RecordingError
from procgraph.recording import (
    Recorder,
    RecordingWriter,
    check_file,
    describe_file,
    graph_streams,
    replay,
)


def _is_graph(arg: str) -> bool:
    return arg.endswith((".yaml", ".yml")) and Path(arg).is_file()


def streams_to_record(sources: list[str], redis_url: str | None) -> dict[str, list[str]]:
    """Broker URL -> stream keys: every output stream of each graph, plus explicit keys."""
    by_url: dict[str, list[str]] = {}
    for arg in sources:
        if _is_graph(arg):
            plan = load_or_exit(Path(arg))
            for url, keys in graph_streams(plan, broker_urls(plan, redis_url)).items():
                by_url.setdefault(url, []).extend(keys)
        elif arg.endswith((".yaml", ".yml")):
            raise fail(f"graph file {arg} does not exist")
        elif redis_url is None:
            raise fail(f"stream {arg!r}: pass --redis URL to say which broker holds it")
        else:
            by_url.setdefault(redis_url, []).append(arg)
    return {url: list(dict.fromkeys(keys)) for url, keys in by_url.items()}


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False)


def print_info(file: Path, as_json: bool = False) -> None:
    """Describe a recording: header, entries, time span, and per stream types and bytes."""
    import datetime
    import json

    from procgraph.safetext import printable

    try:
        d = describe_file(file)
    except RecordingError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(d, indent=1, default=str))
        return
    h = d["header"]
    created = h.get("created")
    when = (datetime.datetime.fromtimestamp(created, datetime.UTC).isoformat(timespec="seconds")
            if isinstance(created, int | float) else "?")
    typer.echo(f"{file}: procgraph recording v{d['format_version']}, {d['bytes']:,} bytes, "
               f"complete")
    typer.echo(f"  created {when}, sources: {printable(json.dumps(h.get('sources', [])))}")
    typer.echo(f"  {d['entries']:,} entries in {len(d['streams'])} stream(s) over "
               f"{d['duration_s']:.1f} s")
    for name, row in d["streams"].items():
        span = (row["last_ms"] - row["first_ms"]) / 1000
        rate = f", {(row['entries'] - 1) / span:.1f}/s" if span > 0 else ""
        types = ", ".join(f"{printable(t, 80)} x{n}" for t, n in row["types"].items())
        typer.echo(f"  {printable(name, 200)}: {row['entries']:,} entries, "
                   f"{row['bytes']:,} bytes, {span:.1f} s{rate}; {types}")


def record(
    sources: Annotated[list[str] | None, typer.Argument(
        metavar="GRAPH_OR_STREAMS...",
        help="graph YAML files (all their output streams) and/or stream keys")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="recording file to write")
                   ] = None,
    info: Annotated[Path | None, typer.Option(
        "--info", help="describe this recording file instead of recording")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="with --info: print JSON")] = False,
    redis_url: Annotated[str | None, typer.Option(
        "--redis", help="broker URL (for stream keys and a graph's embedded brokers; "
        "default: $PROCGRAPH_REDIS)")] = None,
    duration: Annotated[float | None, typer.Option(min=0, help="stop after SECONDS")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="stop after N entries in all")
                     ] = None,
    from_start: Annotated[bool, typer.Option(
        "--from-start", help="also record the entries already in the streams")] = False,
) -> None:
    """Record stream entries to a file (read-only: agents lose nothing); Ctrl-C stops.

    ``record --info FILE`` describes a recording instead.
    """
    if info is not None:
        print_info(info, json_out)
        return
    if not sources or out is None:
        raise fail("give GRAPH_OR_STREAMS... and --out FILE (or --info FILE to describe one)")
    redis_url = redis_url_or_env(redis_url)
    by_url = streams_to_record(sources, redis_url)
    ping_or_exit({url: url for url in by_url})
    try:
        recorder = Recorder(by_url, from_start)
    except BrokerError as exc:
        raise fail(f"cannot reach the broker: {exc}") from None
    streams = recorder.streams
    deadline = None if duration is None else time.monotonic() + duration
    started = time.monotonic()
    try:
        with RecordingWriter(out, {"streams": streams, "sources": sources}) as writer, \
                _progress() as bar:
            task = bar.add_task(f"recording {len(streams)} stream(s) to {out}",
                                total=count or duration, info="")
            try:
                while count is None or writer.count < count:
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        break
                    recorder.read_into(writer, count,
                                       None if deadline is None else deadline - now)
                    done = writer.count if count else min(time.monotonic() - started,
                                                          duration or 0)
                    bar.update(task, completed=done,
                               info=f"{writer.count:,} entries, {writer.bytes / 1e6:,.1f} MB")
            except KeyboardInterrupt:
                pass
            except BrokerError as exc:
                raise fail(f"lost the broker after {writer.count} entries (file kept): {exc}"
                           ) from None
    finally:
        recorder.close()
    typer.echo(f"recorded {writer.count} entries of {len(streams)} stream(s) to {out}")


def replay_cmd(
    file: Annotated[Path, typer.Argument(help="recording file written by `procgraph record`")],
    redis_url: Annotated[str | None, typer.Option(
        "--redis", help="broker URL to write to (default: $PROCGRAPH_REDIS)")] = None,
    speed: Annotated[float, typer.Option(min=0.001, help="time factor: 2 = twice as fast")
                     ] = 1.0,
    fast: Annotated[bool, typer.Option(
        "--as-fast-as-possible", help="ignore the recorded timing")] = False,
    stream_prefix: Annotated[str, typer.Option(
        help="write to PREFIX+<recorded stream key> instead of the recorded key")] = "",
    maxlen: Annotated[int | None, typer.Option(min=1, help="cap each stream (approximate)")
                      ] = None,
) -> None:
    """Write recorded entries back to streams, keeping their relative timing."""
    url = redis_url_or_env(redis_url)
    if url is None:
        raise fail("pass --redis URL (or set $PROCGRAPH_REDIS): the broker to write to")
    try:
        reader = check_file(file)  # the whole file is checked before anything is written
    except RecordingError as exc:
        raise fail(str(exc)) from None
    ping_or_exit({url: url})
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=5.0)
    written = 0
    with _progress() as bar:
        task = bar.add_task(f"replaying {file.name}", total=reader.size, info="")
        try:
            for written in replay(reader, client, speed=speed, fast=fast,
                                  stream_prefix=stream_prefix, maxlen=maxlen):
                bar.update(task, completed=reader.position(), info=f"{written:,} entries")
        except KeyboardInterrupt:
            pass
        except (BrokerError, RecordingError) as exc:  # the file changed since checked
            raise fail(str(exc)) from None
        finally:
            client.close()
    typer.echo(f"replayed {written} entries from {file}")


def register(app: typer.Typer) -> None:
    """Add the commands to the CLI."""
    app.command()(record)
    app.command("replay")(replay_cmd)
