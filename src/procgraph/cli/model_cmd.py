"""``procgraph model push|list|rollback``: the model registry in a broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from procgraph.cli.common import fail
from procgraph.redact import redact_url

if TYPE_CHECKING:
    from procgraph.graph import GraphPlan
    from procgraph.registry import ModelRegistry
    from procgraph.registry.store import ModelCheck, Progress

T = TypeVar("T")

model_app = typer.Typer(
    name="model",
    help="ONNX models in a broker: versions, sha256, rollback (classifiers follow them).",
    no_args_is_help=True,
)

RedisOption = Annotated[str | None, typer.Option(
    "--redis", help="broker URL (default: $PROCGRAPH_REDIS, else the --graph line's broker, "
    "else redis://127.0.0.1:6379)",
    show_default=False)]
DEFAULT_URL = "redis://127.0.0.1:6379"


GraphOption = Annotated[str | None, typer.Option(
    "--graph", help="graph YAML file or name of a running line: its broker is used when "
    "--redis is not given", show_default=False)]


def _plan(graph: str) -> GraphPlan:
    """The plan of ``graph``: a graph file, or the name of a line running on this machine
    (its file from the run record)."""
    from procgraph.cli.common import load_or_exit
    from procgraph.runs import runs_of

    if graph.endswith((".yaml", ".yml")) or "/" in graph or Path(graph).is_file():
        if not Path(graph).is_file():
            raise fail(f"graph file {graph} does not exist: give a graph YAML file or the "
                       "name of a running line (procgraph ps)")
        return load_or_exit(Path(graph))
    records = [r for r in runs_of(graph) if r.local and r.file]
    if not records:
        raise fail(f"no running line of graph {graph!r} found on this machine: give the "
                   "graph file (--graph FILE), --redis URL, or start the line "
                   "(procgraph run FILE)")
    return load_or_exit(Path(records[-1].file))


def _url(given: str | None, graph: str | None = None, agent: str | None = None,
         model: str | None = None) -> str:
    """The registry's broker: ``--redis``, else ``$PROCGRAPH_REDIS`` (through
    procgraph.settings), else, with ``--graph``, the broker of agent ``agent`` or of the
    agents that follow ``registry:<model>`` (the graph's first broker if none does), as
    :func:`procgraph.cli.common.broker_urls` finds it (the running line's record), else
    :data:`DEFAULT_URL`."""
    if given:
        return given
    from procgraph.settings import load_settings

    env = load_settings().redis
    if env or graph is None:
        return env or DEFAULT_URL
    from procgraph.cli.common import broker_urls

    plan = _plan(graph)
    if agent is not None and agent not in plan.agents:
        raise fail(f"graph {plan.name!r}: no agent {agent!r}; agents: {', '.join(plan.agents)}")
    if agent is not None:
        names = [plan.agents[agent].broker]
    else:
        follows = [a for a in plan.agents.values() if isinstance(a.params.get("model"), str)
                   and a.params["model"].startswith("registry:")
                   and (model is None or a.params["model"] == f"registry:{model}")]
        names = list(dict.fromkeys(a.broker for a in follows)) or [next(iter(plan.brokers))]
    if len(names) > 1:
        raise fail(f"graph {plan.name!r}: agents following the registry are on brokers "
                   f"{', '.join(names)}: name one agent with --agent, or give --redis URL")
    return broker_urls(plan, None)[names[0]]


def _run(url: str, action: str, fn: Callable[[ModelRegistry], T]) -> T:
    """Call ``fn`` with a registry on ``url``; known errors exit 1 with a message."""
    from redis import RedisError

    from procgraph.errors import BrokerError, BrokerUnavailable, ProcgraphError
    from procgraph.registry import ModelRegistry

    try:
        registry = ModelRegistry.connect(url)
    except BrokerUnavailable as exc:
        raise fail(f"cannot reach the broker at {url}: {exc}") from None
    except BrokerError as exc:  # BrokerRefused: a wrong password, an untrusted certificate
        raise fail(str(exc)) from None
    try:
        return fn(registry)
    except ProcgraphError as exc:
        raise fail(f"{action}: {exc}") from None
    except RedisError as exc:  # e.g. a key of the wrong type: not ours to fix silently
        raise fail(f"{action}: broker error at {url}: {exc}") from None
    finally:
        registry.close()


def _size(n: int) -> str:
    from procgraph.registry.check import size_text

    return size_text(n)


def _agent_checks(graph: str, agent: str | None, name: str) -> ModelCheck:
    """``check(data)`` running ``check_model`` of the agent(s) of ``graph`` that take NAME."""
    from procgraph.graph import agent_class

    plan = _plan(graph)
    if agent is not None and agent not in plan.agents:
        raise fail(f"{graph}: no agent {agent!r}; agents: {', '.join(plan.agents)}")
    wanted = f"registry:{name}"
    chosen = [agent] if agent is not None else [
        a for a, ap in plan.agents.items() if ap.params.get("model") == wanted]
    if not chosen:
        raise fail(f"{graph}: no agent follows {wanted}: name one with --agent")
    checks: list[tuple[str, Callable[[Any, bytes], object], Any]] = []
    for a in chosen:
        cls = agent_class(plan, a)
        checker = getattr(cls, "check_model", None)
        if not callable(checker):
            raise fail(f"{graph}: agent {a!r} ({plan.agents[a].class_path}) cannot check a "
                       "model (its class has no check_model): drop --graph/--agent")
        checks.append((a, checker, cls.Params.model_validate(plan.agents[a].params)))

    def check(data: bytes) -> None:
        for a, checker, params in checks:
            try:
                checker(params, data)
            except ValueError as exc:
                raise ValueError(f"agent {a!r} of {graph}: {exc}") from None

    return check


def _progress(name: str) -> Progress:
    """A bytes-sent line on stderr for pushes of several chunks: the first chunk, then at
    most one a second, then the last."""
    last: list[float] = []

    def report(sent: int, total: int) -> None:
        now = time.monotonic()
        if sent >= total and not last:
            return  # sent in one chunk: no progress to show
        if sent < total and last and now - last[0] < 1.0:
            return
        last[:] = [now]
        typer.echo(f"{name}: {_size(sent)} of {_size(total)} sent "
                   f"({100 * sent // total}%)", err=True)

    return report


@model_app.command("push")
def push(
    name: Annotated[str, typer.Argument(help="model name, e.g. parts-front")],
    file: Annotated[Path, typer.Argument(help="ONNX file")],
    version: Annotated[str | None, typer.Option(
        "--version", help="version label (default: next integer)")] = None,
    graph: Annotated[str | None, typer.Option(
        "--graph", help="check the model against the agents of this graph (file, or name "
        "of a running line) that follow registry:NAME (or --agent); its broker is used "
        "when --redis is not given", show_default=False)] = None,
    agent: Annotated[str | None, typer.Option(
        "--agent", help="with --graph: check against this agent's params",
        show_default=False)] = None,
    new_signature: Annotated[bool, typer.Option(
        "--new-signature", help="accept inputs/outputs unlike the current version's")] = False,
    redis_url: RedisOption = None,
) -> None:
    """Check FILE (onnxruntime loads it; it fits the broker; it suits the agents), then store
    it as a new version of NAME and make it current (classifiers swap to it)."""
    if not file.is_file():
        raise fail(f"no such file: {file}" if not file.exists() else
                   f"{file} is not a regular file: give an .onnx file")
    if agent is not None and graph is None:
        raise fail("--agent needs --graph GRAPH.yaml (the graph the agent is in)")
    check = _agent_checks(graph, agent, name) if graph is not None else None
    rec = _run(_url(redis_url, graph, agent, name), f"push {name}", lambda r: r.push(
        name, file, version, check=check, new_signature=new_signature,
        progress=_progress(name)))
    typer.echo(f"{rec.name}: version {rec.version} is current "
               f"(sha256 {rec.sha256[:12]}, {_size(rec.size)})")


@model_app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="only this model")] = None,
    redis_url: RedisOption = None,
    graph: GraphOption = None,
    agent: Annotated[str | None, typer.Option(
        "--agent", help="with --graph: the registry on this agent's broker",
        show_default=False)] = None,
) -> None:
    """Show every version of every model (or of NAME); * marks the current one."""
    from rich.console import Console
    from rich.table import Table

    if agent is not None and graph is None:
        raise fail("--agent needs --graph GRAPH (the graph the agent is in)")
    url = _url(redis_url, graph, agent, name)
    records = _run(url, "list", lambda r: r.list(name))
    if not records:
        if name:
            raise fail(f"no model {name!r} in the registry at {url}")
        typer.echo(f"the registry at {redact_url(url)} is empty")
        return
    table = Table(title=f"models at {redact_url(url)}")
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
    to: Annotated[str | None, typer.Option(
        "--to", help="the version to make current (default: the one before the current)",
        show_default=False)] = None,
    redis_url: RedisOption = None,
    graph: GraphOption = None,
    agent: Annotated[str | None, typer.Option(
        "--agent", help="with --graph: the registry on this agent's broker",
        show_default=False)] = None,
) -> None:
    """Make VERSION (--to), or the version before the current one, current again
    (classifiers swap back)."""
    if agent is not None and graph is None:
        raise fail("--agent needs --graph GRAPH (the graph the agent is in)")
    rec = _run(_url(redis_url, graph, agent, name), f"rollback {name}",
               lambda r: r.rollback(name, to))
    typer.echo(f"{rec.name}: version {rec.version} is current again "
               f"(sha256 {rec.sha256[:12]})")


def register(app: typer.Typer) -> None:
    """Add the ``model`` sub-command group to the CLI."""
    app.add_typer(model_app, name="model")
