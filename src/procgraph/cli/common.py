"""Helpers shared by CLI commands: loading a graph and finding its brokers, friendly errors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import typer

from procgraph.brokers import resolve_broker_urls
from procgraph.constants import KEY_PREFIX
from procgraph.errors import (
    BrokerError,
    BrokerUnavailable,
    ProcgraphError,
    broker_unavailable_as,
)
from procgraph.graph import GraphPlan, load_graph
from procgraph.redact import redact
from procgraph.safetext import printable
from procgraph.settings import load_settings


def fail(message: str) -> typer.Exit:
    """Print an error (no traceback; credentials masked) and return the Exit to raise."""
    typer.secho(f"error: {redact(message)}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def usage_error(message: str, command_path: str | None) -> None:
    """Print a usage error (unknown option or command, missing argument, bad value) as one
    ``error:`` line plus ``try: COMMAND --help`` when the command is known.

    ``message`` is click's text: its lines are joined with ``; ``, control characters
    escaped and its first letter lower-cased (``No such option`` -> ``no such option``).
    """
    text = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    text = printable(text, limit=1000) or "bad command line"
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    typer.secho(f"error: {redact(text)}", fg=typer.colors.RED, err=True)
    if command_path:
        typer.echo(f"try: {printable(command_path, limit=200)} --help", err=True)


def warn(line: str) -> None:
    """Print one ``warning:`` line on stderr (control characters escaped)."""
    typer.secho(f"warning: {printable(line, limit=1000)}", fg=typer.colors.YELLOW, err=True)


def load_or_exit(file: Path) -> GraphPlan:
    """Load and validate a graph, printing its warnings; on error print what to fix, exit 1."""
    try:
        return load_graph(file, warn=warn)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None


def redis_url_or_env(url: str | None) -> str | None:
    """``--redis URL`` if given, else ``$PROCGRAPH_REDIS`` (through procgraph.settings).

    Options take their environment default here rather than from typer's ``envvar=``, so
    procgraph.settings stays the one reader of ``PROCGRAPH_*`` variables.
    """
    return url or load_settings().redis


def running_brokers(graph: str, file: str | None = None) -> dict[str, str]:
    """Broker URLs (name -> URL) of the running line of graph ``graph``, from its live run
    records (:mod:`procgraph.runs`); a record of graph file ``file`` wins. Empty: none runs."""
    from procgraph.runs import find_runs

    records = [r for r in find_runs() if r.graph == graph]
    if file is not None:
        records.sort(key=lambda r: r.file != file)
    found: dict[str, str] = {}
    for record in reversed(records):  # the preferred record's URLs are applied last
        found.update(record.brokers)
    return found


def broker_urls(plan: GraphPlan, override: str | None) -> dict[str, str]:
    """The URL of each broker of a graph, as a tool outside the supervisor reaches it.

    :func:`procgraph.brokers.resolve_broker_urls` with ``override`` (``--redis``, else
    ``$PROCGRAPH_REDIS``), the supervisor's ``$PROCGRAPH_BROKERS`` and, for an embedded
    broker neither names, the URL in the run record of the running line of this graph
    (:func:`running_brokers`); exits 1 saying what to pass when a broker's URL cannot be
    known.
    """
    given = dict(load_settings().brokers or {})
    url = redis_url_or_env(override)
    if url is None:
        for name, found in running_brokers(plan.name, plan.file).items():
            given.setdefault(name, found)
    try:
        return resolve_broker_urls(plan, url, given=given)
    except ProcgraphError as exc:
        message = str(exc)
        if url is None and "embedded on a free port" in message:
            message += ", or start the line (procgraph run FILE, or run -d) so it can be found"
        raise fail(message) from None


def stream_broker_url(stream: str, override: str | None) -> str:
    """The URL of the broker holding ``stream``, for ``tap`` and ``pub``.

    ``override`` (``--redis``, else ``$PROCGRAPH_REDIS``) when given; else, for a stream
    named ``pg:<graph>:...``, the broker of the running line of that graph (from its run
    record: the broker of the output that writes the stream, else its first broker). Exits 1
    saying to give --redis or start the line when neither is known.
    """
    url = redis_url_or_env(override)
    if url:
        return url
    parts = stream.split(":")
    if len(parts) < 3 or parts[0] != KEY_PREFIX or not parts[1]:
        raise fail(f"{printable(stream, limit=200)!r} is not a stream of a line "
                   f"({KEY_PREFIX}:<graph>:...): give --redis URL")
    graph = parts[1]
    from procgraph.runs import find_runs

    records = [r for r in find_runs() if r.graph == graph and r.brokers]
    if not records:
        raise fail(f"no running line of graph {printable(graph, limit=100)!r} found on this "
                   "machine: give --redis URL, or start the line (procgraph run FILE)")
    record = records[-1]
    return record.brokers.get(_stream_broker(record.file, stream) or "",
                              next(iter(record.brokers.values())))


def _stream_broker(file: str, stream: str) -> str | None:
    """The broker of the output that writes ``stream`` in graph file ``file`` (None: unknown)."""
    try:
        plan = load_graph(Path(file), warn=lambda _line: None)
    except (ProcgraphError, OSError, ValueError):
        return None
    for agent in plan.agents.values():
        for out in agent.outputs:
            if out.stream == stream:
                return out.broker
    return None


def ping_or_exit(urls: Mapping[str, str]) -> None:
    """PING every broker; exit 1 with one ``error:`` line (password masked) naming the broker
    that cannot be reached or that refuses this client (wrong password, untrusted TLS).

    ``urls`` maps a broker's name to its URL (a URL given without a name: map it to itself).
    """
    import redis

    for name, url in urls.items():
        what = url if name == url else f"broker {name!r} at {url}"
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        except ValueError as exc:
            raise fail(f"{what}: bad URL: {exc}") from None
        try:
            with broker_unavailable_as(what):
                client.ping()
        except BrokerUnavailable as exc:
            raise fail(f"cannot reach {what}: {exc.__cause__}: is the broker running there? "
                       "Check --redis / $PROCGRAPH_REDIS and the graph's broker url") from None
        except BrokerError as exc:
            raise fail(str(exc)) from None
        finally:
            client.close()
