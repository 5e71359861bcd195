"""Helpers shared by CLI commands: loading a graph and finding its brokers, friendly errors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import typer

from procgraph.brokers import resolve_broker_urls
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


def broker_urls(plan: GraphPlan, override: str | None) -> dict[str, str]:
    """The URL of each broker of a graph, as a tool outside the supervisor reaches it.

    :func:`procgraph.brokers.resolve_broker_urls` with ``override`` (``--redis``, else
    ``$PROCGRAPH_REDIS``) and the supervisor's ``$PROCGRAPH_BROKERS``; exits 1 saying what
    to pass when a broker's URL cannot be known.
    """
    try:
        return resolve_broker_urls(plan, redis_url_or_env(override),
                                   given=load_settings().brokers)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None


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
