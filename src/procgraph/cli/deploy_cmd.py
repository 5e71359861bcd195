"""``procgraph deploy compose|k8s GRAPH``: write deployment manifests (nothing is started)."""

from __future__ import annotations

import os
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import fail
from procgraph.deploy import (
    DeployOptions,
    compose_env_file,
    container_env,
    dns_name,
    is_secret,
    render_compose,
    render_k8s,
    render_k8s_secret,
    warnings,
)
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
SecretsOpt = Annotated[Path | None, typer.Option(
    "--secrets-out", help="where the secret variables go, mode 0600 (default: beside --out, "
    "else in the current folder)")]


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


def _for_containers(file: Path, opts: DeployOptions, plan: GraphPlan
                    ) -> tuple[GraphPlan, DeployOptions]:
    """Add :func:`container_env` (servers on 0.0.0.0, ...), validate the graph with it and
    print a note per variable set."""
    try:
        extra, notes = container_env(plan, opts)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None
    if extra:
        env = {**extra, **opts.env}
        try:
            plan = load_graph(file, env=env)
        except ProcgraphError as exc:
            given = ", ".join(f"{k}={v}" for k, v in extra.items())
            keep = " ".join(f"--env {k}=..." for k in extra)
            raise fail(f"{exc}\n  (deploy sets {given} so that the agents meet in their "
                       f"containers; fix the graph or --env as said, or override: {keep})"
                       ) from None
        opts = replace(opts, env=env)
    for note in notes:
        typer.secho(f"note: {note}", err=True)
    return plan, opts


def _warn(plan: GraphPlan, opts: DeployOptions, kind: str, file: Path) -> None:
    """The warnings on the terminal (they are in the output's header too)."""
    try:
        found = warnings(plan, opts, kind)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None
    for line in found:
        typer.secho(f"warning: {line}", err=True)
    modules = _modules_beside(file)
    if modules:
        typer.secho(f"note: the graph's folder has agent modules ({', '.join(modules)}): the "
                    f"image must hold them: procgraph image build {file} --tag {opts.image}",
                    err=True)


def _modules_beside(file: Path) -> list[str]:
    """Python modules beside the graph that the image build puts into /app/graphs."""
    try:
        from procgraph.image import app_files

        files = app_files(file)
    except (ProcgraphError, ImportError, OSError):
        return []
    return sorted(rel.removeprefix("graphs/") for rel in files if rel.endswith(".py"))


def _command(kind: str, file: Path, options: list[str]) -> str:
    return shlex.join(["procgraph", "deploy", kind, str(file), *options])


def _write(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.secho(f"wrote {out}", err=True)


def _env_options(values: dict[str, str]) -> list[str]:
    """``--env=NAME=VALUE`` for the header, a secret's value masked."""
    return [f"--env={k}={'***' if is_secret(k, v) else v}" for k, v in values.items()]


def _label(plan: GraphPlan) -> str:
    try:
        return dns_name(plan.name)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None


def _secret_path(given: Path | None, out: Path | None, default: str, suffix: str) -> Path:
    if given is not None:
        return given
    if out is not None:
        return out.with_name(out.stem + suffix)
    return Path(default)


def _write_secret(text: str | None, path: Path) -> None:
    """Write the secrets apart, readable by this user only (0600)."""
    if text is None:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    typer.secho(f"wrote the secrets to {path} (mode 0600; keep it out of version control)",
                err=True)


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
    secrets_out: SecretsOpt = None,
) -> None:
    """Compose file: one service per embedded broker and per agent replica.

    Secret variables go to an env file (mode 0600) that the services name in ``env_file``.
    """
    values = _env(env)
    plan, text = _prepare(file, values)
    base = out.resolve().parent if out is not None else Path.cwd()
    if graph_source is None:
        graph_source = os.path.relpath(file.resolve(), base)
        if not graph_source.startswith("."):
            graph_source = f"./{graph_source}"
    secrets = _secret_path(secrets_out, out, f"procgraph-{_label(plan)}.env", ".env")
    env_file = os.path.relpath(secrets.resolve(), base)
    env_file = env_file if env_file.startswith(".") else f"./{env_file}"
    options = ["--image", image, "--broker-image", broker_image]
    options += _env_options(values)
    options += [f"--publish={p}" for p in publish or []]
    options += ["--graph-source", graph_source]
    opts = DeployOptions(graph_text=text, graph_file=file.name, image=image,
                         broker_image=broker_image, env=values, publish=tuple(publish or ()),
                         graph_source=graph_source, command=_command("compose", file, options),
                         env_file=env_file)
    plan, opts = _for_containers(file, opts, plan)
    _warn(plan, opts, "compose", file)
    try:
        rendered, secret = render_compose(plan, opts), compose_env_file(plan, opts)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None
    _write_secret(secret, secrets)
    _write(rendered, out)


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
    secrets_out: SecretsOpt = None,
) -> None:
    """Kubernetes manifests: graph ConfigMap, brokers, one StatefulSet per agent.

    Secret variables go to a Secret written apart (mode 0600) that the agents name in
    ``envFrom``; apply it first.
    """
    if service_type not in ("ClusterIP", "NodePort", "LoadBalancer"):
        raise fail(f"--service-type {service_type!r}: use ClusterIP, NodePort or LoadBalancer")
    values = _env(env)
    plan, text = _prepare(file, values)
    options = ["--image", image, "--broker-image", broker_image]
    options += ["--namespace", namespace] if namespace else []
    options += _env_options(values)
    options += [f"--publish={p}" for p in publish or []]
    if node_label != "kubernetes.io/hostname":
        options += ["--node-label", node_label]
    if service_type != "ClusterIP":
        options += ["--service-type", service_type]
    opts = DeployOptions(graph_text=text, graph_file=file.name, image=image,
                         broker_image=broker_image, env=values, publish=tuple(publish or ()),
                         namespace=namespace, node_label=node_label, service_type=service_type,
                         command=_command("k8s", file, options), shell=dict(os.environ))
    plan, opts = _for_containers(file, opts, plan)
    _warn(plan, opts, "k8s", file)
    try:
        rendered, secret = render_k8s(plan, opts), render_k8s_secret(plan, opts)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None
    _write_secret(secret, _secret_path(secrets_out, out, f"{_label(plan)}-secret.yaml",
                                       ".secret.yaml"))
    _write(rendered, out)


deploy_app.command()(compose)
deploy_app.command()(k8s)


def register(app: typer.Typer) -> None:
    """Add ``deploy`` to the CLI."""
    app.add_typer(deploy_app, name="deploy")
