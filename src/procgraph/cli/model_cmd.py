"""``procgraph model push|list|rollback``: the model registry in a broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from procgraph.cli.common import fail

if TYPE_CHECKING:
    from procgraph.registry import ModelRegistry

T = TypeVar("T")

model_app = typer.Typer(
    name="model",
    help="ONNX models in a broker: versions, sha256, rollback (classifiers follow them).",
    no_args_is_help=True,
)

RedisOption = Annotated[str | None, typer.Option(
    "--redis", help="broker URL (default: $PROCGRAPH_REDIS, else redis://127.0.0.1:6379)",
    show_default=False)]
DEFAULT_URL = "redis://127.0.0.1:6379"


def _url(given: str | None) -> str:
    """``--redis``, else ``$PROCGRAPH_REDIS`` (through procgraph.settings), else the default."""
    if given:
        return given
    from procgraph.settings import load_settings

    return load_settings().redis or DEFAULT_URL


def _run(url: str, action: str, fn: Callable[[ModelRegistry], T]) -> T:
    """Call ``fn`` with a registry on ``url``; known errors exit 1 with a message."""
    from redis import RedisError

    from procgraph.errors import BrokerUnavailable, ProcgraphError
    from procgraph.registry import ModelRegistry

    try:
        registry = ModelRegistry.connect(url)
    except BrokerUnavailable as exc:
        raise fail(f"cannot reach the broker at {url}: {exc}") from None
    try:
        return fn(registry)
    except ProcgraphError as exc:
        raise fail(f"{action}: {exc}") from None
    except RedisError as exc:  # e.g. a key of the wrong type: not ours to fix silently
        raise fail(f"{action}: broker error at {url}: {exc}") from None
    finally:
        registry.close()


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


@model_app.command("push")
def push(
    name: Annotated[str, typer.Argument(help="model name, e.g. parts-front")],
    file: Annotated[Path, typer.Argument(help="ONNX file")],
    version: Annotated[str | None, typer.Option(
        "--version", help="version label (default: next integer)")] = None,
    redis_url: RedisOption = None,
) -> None:
    """Store FILE as a new version of NAME and make it current (classifiers swap to it)."""
    if not file.is_file():
        raise fail(f"no such file: {file}")
    rec = _run(_url(redis_url), f"push {name}", lambda r: r.push(name, file, version))
    typer.echo(f"{rec.name}: version {rec.version} is current "
               f"(sha256 {rec.sha256[:12]}, {_size(rec.size)})")


@model_app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="only this model")] = None,
    redis_url: RedisOption = None,
) -> None:
    """Show every version of every model (or of NAME); * marks the current one."""
    from rich.console import Console
    from rich.table import Table

    url = _url(redis_url)
    records = _run(url, "list", lambda r: r.list(name))
    if not records:
        if name:
            raise fail(f"no model {name!r} in the registry at {url}")
        typer.echo("the registry is empty")
        return
    table = Table(title=f"models at {url}")
    for col in ("name", "version", "current", "sha256", "size", "pushed"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for rec in records:
        pushed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.pushed))
        table.add_row(rec.name, rec.version, "*" if rec.current else "", rec.sha256[:12],
                      _size(rec.size), pushed)
    Console().print(table)


@model_app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="model name")],
    redis_url: RedisOption = None,
) -> None:
    """Make the version before the current one current again (classifiers swap back)."""
    rec = _run(_url(redis_url), f"rollback {name}", lambda r: r.rollback(name))
    typer.echo(f"{rec.name}: version {rec.version} is current again "
               f"(sha256 {rec.sha256[:12]})")


def register(app: typer.Typer) -> None:
    """Add the ``model`` sub-command group to the CLI."""
    app.add_typer(model_app, name="model")
