"""``procgraph record`` and ``procgraph replay``: streams to a file and back.

Recording reads with plain XREAD (no consumer group), so it takes nothing from the agents.
The file format is described in procgraph.recording and docs/cli.md.
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

from procgraph.cli.common import broker_urls, fail, load_or_exit
from procgraph.cli.top_cmd import BrokerErrors
from procgraph.recording import Record, RecordingError, RecordingReader, RecordingWriter, entry_ms

READ_COUNT = 200
PIPELINE_MAX = 200


def _is_graph(arg: str) -> bool:
    return arg.endswith((".yaml", ".yml")) and Path(arg).is_file()


def streams_to_record(sources: list[str], redis_url: str | None) -> dict[str, list[str]]:
    """Broker URL -> stream keys: every output stream of each graph, plus explicit keys."""
    by_url: dict[str, list[str]] = {}
    for arg in sources:
        if _is_graph(arg):
            plan = load_or_exit(Path(arg))
            urls = broker_urls(plan, redis_url)
            for agent in plan.agents.values():
                for out in agent.outputs:
                    by_url.setdefault(urls[out.broker], []).append(out.stream)
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


def record(
    sources: Annotated[list[str], typer.Argument(
        metavar="GRAPH_OR_STREAMS...",
        help="graph YAML files (all their output streams) and/or stream keys")],
    out: Annotated[Path, typer.Option("--out", "-o", help="recording file to write")],
    redis_url: Annotated[str | None, typer.Option(
        "--redis", envvar="PROCGRAPH_REDIS",
        help="broker URL (for stream keys and a graph's embedded brokers)")] = None,
    duration: Annotated[float | None, typer.Option(min=0, help="stop after SECONDS")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="stop after N entries in all")
                     ] = None,
    from_start: Annotated[bool, typer.Option(
        "--from-start", help="also record the entries already in the streams")] = False,
) -> None:
    """Record stream entries to a file (read-only: agents lose nothing); Ctrl-C stops."""
    by_url = streams_to_record(sources, redis_url)
    clients = {url: redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=5.0)
               for url in by_url}
    try:
        last = {url: _start_ids(clients[url], keys, from_start) for url, keys in by_url.items()}
    except BrokerErrors as exc:
        raise fail(f"cannot reach the broker: {exc}") from None
    streams = [s for keys in by_url.values() for s in keys]
    header = {"streams": streams, "sources": sources}
    block_ms = 200 if len(clients) == 1 else 50
    deadline = None if duration is None else time.monotonic() + duration
    started = time.monotonic()
    with RecordingWriter(out, header) as writer, _progress() as bar:
        task = bar.add_task(f"recording {len(streams)} stream(s) to {out}",
                            total=count or duration, info="")
        try:
            while count is None or writer.count < count:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                wait = block_ms if deadline is None else max(1, min(block_ms,
                                                                    int((deadline - now) * 1000)))
                for url, client in clients.items():
                    reply = client.xread(last[url], count=READ_COUNT, block=wait)
                    for stream, entries in reply or []:
                        key = stream.decode()
                        for entry_id, fields in entries:
                            if count is not None and writer.count >= count:
                                break
                            eid = entry_id.decode()
                            writer.write(Record(key, eid, entry_ms(eid), list(fields.items())))
                            last[url][key] = eid
                done = writer.count if count else min(time.monotonic() - started, duration or 0)
                bar.update(task, completed=done,
                           info=f"{writer.count:,} entries, {writer.bytes / 1e6:,.1f} MB")
        except KeyboardInterrupt:
            pass
        except BrokerErrors as exc:
            raise fail(f"lost the broker after {writer.count} entries (file kept): {exc}"
                       ) from None
    typer.echo(f"recorded {writer.count} entries of {len(streams)} stream(s) to {out}")


def _start_ids(client: redis.Redis, keys: list[str], from_start: bool) -> dict[str, str]:
    """Where XREAD starts per stream: 0-0, or the last id now (so no entry falls between)."""
    ids: dict[str, str] = {}
    for key in keys:
        newest = [] if from_start else client.xrevrange(key, count=1)
        ids[key] = newest[0][0].decode() if newest else "0-0"
    return ids


def _xadd_args(key: str, rec: Record, maxlen: int | None) -> list[bytes | str | int]:
    args: list[bytes | str | int] = ["XADD", key]
    if maxlen:
        args += ["MAXLEN", "~", maxlen]
    args.append("*")
    for name, value in rec.fields:  # a flat list keeps order (and repeated names)
        args += [name, value]
    return args


def replay(
    file: Annotated[Path, typer.Argument(help="recording file written by `procgraph record`")],
    redis_url: Annotated[str, typer.Option(
        "--redis", envvar="PROCGRAPH_REDIS", help="broker URL to write to")],
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
    try:
        reader = RecordingReader(file)
        for _ in reader:  # check the whole file before writing anything
            pass
        reader = RecordingReader(file)
    except RecordingError as exc:
        raise fail(str(exc)) from None
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1.0, socket_timeout=5.0)
    try:
        client.ping()
    except BrokerErrors as exc:
        raise fail(f"cannot reach {redis_url}: {exc}") from None
    written = 0
    pipe = client.pipeline(transaction=False)
    first_ts: int | None = None
    t0 = time.monotonic()
    with _progress() as bar:
        task = bar.add_task(f"replaying {file.name}", total=reader.size, info="")
        try:
            for rec in reader:
                if first_ts is None:
                    first_ts, t0 = rec.ts_ms, time.monotonic()
                wait = 0.0 if fast else (
                    (rec.ts_ms - first_ts) / 1000 / speed - (time.monotonic() - t0))
                if wait > 0 or len(pipe) >= PIPELINE_MAX:
                    pipe.execute()
                    bar.update(task, completed=reader.position(), info=f"{written:,} entries")
                    if wait > 0:
                        time.sleep(wait)
                pipe.execute_command(*_xadd_args(stream_prefix + rec.stream, rec, maxlen))
                written += 1
            pipe.execute()
            bar.update(task, completed=reader.size, info=f"{written:,} entries")
        except KeyboardInterrupt:
            pass
        except BrokerErrors as exc:
            raise fail(f"lost the broker after {written} entries: {exc}") from None
        except RecordingError as exc:  # the file changed since it was checked
            raise fail(str(exc)) from None
    typer.echo(f"replayed {written} entries from {file}")


def register(app: typer.Typer) -> None:
    """Add the commands to the CLI."""
    app.command()(record)
    app.command()(replay)
