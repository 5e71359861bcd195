"""``procgraph deploy compose|k8s GRAPH``: write deployment manifests (nothing is started)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import fail
from procgraph.deploy import DeployOptions, render_compose, render_k8s
from procgraph.errors import ProcgraphError
from procgraph.graph import GraphPlan, load_graph

deploy_app = typer.Typer(
    name="deploy", no_args_is_help=True,
    help="Write a Compose file or Kubernetes manifests for a graph (nothing is started).")

GraphArg = Annotated[Path, typer.Argument(help="graph YAML file")]
ImageOpt = Annotated[str, typer.Option(help="agent image (build it from deploy/Dockerfile)")]
BrokerImageOpt = Annotated[str, typer.Option(
    help="image of embedded brokers (valkey/valkey:8 or redis:7)")]
EnvOpt = Annotated[list[str] | None, typer.Option(
    "--env", "-e", help="NAME=VALUE: expands ${NAME} in the graph and is set in every agent "
    "container (the shell environment is not read)")]
PublishOpt = Annotated[list[str] | None, typer.Option(
    help="AGENT: also publish this agent's params.port (the HMI is published already)")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="write here (default: stdout)")]


def _env(items: list[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"--env {item!r}: write NAME=VALUE")
        env[key] = value
    return env


def _prepare(file: Path, env: dict[str, str]) -> tuple[GraphPlan, str]:
    """Load and validate the graph with ``env`` only; return it and its text."""
    try:
        plan = load_graph(file, env=env)
        text = file.read_text(encoding="utf-8")
    except ProcgraphError as exc:
        hint = "\n  (deploy reads variables from --env NAME=VALUE, not from the shell)" \
            if "environment variable" in str(exc) else ""
        raise fail(f"{exc}{hint}") from None
    return plan, text


def _command(kind: str, file: Path, options: list[str]) -> str:
    return shlex.join(["procgraph", "deploy", kind, str(file), *options])


def _write(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.secho(f"wrote {out}", err=True)


def compose(
    file: GraphArg,
    image: ImageOpt = "procgraph:0.1",
    broker_image: BrokerImageOpt = "valkey/valkey:8",
    env: EnvOpt = None,
    publish: PublishOpt = None,
    graph_source: Annotated[str | None, typer.Option(
        help="graph path for the bind mount, relative to the Compose file "
        "(default: computed from --out, else from the current folder)")] = None,
    out: OutOpt = None,
) -> None:
    """Compose file: one service per embedded broker and per agent replica."""
    values = _env(env)
    plan, text = _prepare(file, values)
    if graph_source is None:
        base = out.resolve().parent if out is not None else Path.cwd()
        graph_source = os.path.relpath(file.resolve(), base)
        if not graph_source.startswith("."):
            graph_source = f"./{graph_source}"
    options = ["--image", image, "--broker-image", broker_image]
    options += [f"--env={k}={v}" for k, v in values.items()]
    options += [f"--publish={p}" for p in publish or []]
    options += ["--graph-source", graph_source]
    opts = DeployOptions(graph_text=text, graph_file=file.name, image=image,
                         broker_image=broker_image, env=values, publish=tuple(publish or ()),
                         graph_source=graph_source, command=_command("compose", file, options))
    try:
        _write(render_compose(plan, opts), out)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None


def k8s(
    file: GraphArg,
    image: ImageOpt = "procgraph:0.1",
    broker_image: BrokerImageOpt = "valkey/valkey:8",
    namespace: Annotated[str | None, typer.Option(
        help="create this Namespace and put everything in it (default: none, use kubectl -n)")
    ] = None,
    env: EnvOpt = None,
    publish: PublishOpt = None,
    node_label: Annotated[str, typer.Option(
        help="node label matched against each agent's node:")] = "kubernetes.io/hostname",
    service_type: Annotated[str, typer.Option(
        help="Service type of published ports: ClusterIP, NodePort or LoadBalancer")
    ] = "ClusterIP",
    out: OutOpt = None,
) -> None:
    """Kubernetes manifests: graph ConfigMap, brokers, one StatefulSet per agent."""
    if service_type not in ("ClusterIP", "NodePort", "LoadBalancer"):
        raise fail(f"--service-type {service_type!r}: use ClusterIP, NodePort or LoadBalancer")
    values = _env(env)
    plan, text = _prepare(file, values)
    options = ["--image", image, "--broker-image", broker_image]
    options += ["--namespace", namespace] if namespace else []
    options += [f"--env={k}={v}" for k, v in values.items()]
    options += [f"--publish={p}" for p in publish or []]
    if node_label != "kubernetes.io/hostname":
        options += ["--node-label", node_label]
    if service_type != "ClusterIP":
        options += ["--service-type", service_type]
    opts = DeployOptions(graph_text=text, graph_file=file.name, image=image,
                         broker_image=broker_image, env=values, publish=tuple(publish or ()),
                         namespace=namespace, node_label=node_label, service_type=service_type,
                         command=_command("k8s", file, options))
    try:
        _write(render_k8s(plan, opts), out)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None


deploy_app.command()(compose)
deploy_app.command()(k8s)


def register(app: typer.Typer) -> None:
    """Add ``deploy`` to the CLI."""
    app.add_typer(deploy_app, name="deploy")
