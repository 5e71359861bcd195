"""``procgraph run FILE``: start brokers and agents, supervise until stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from procgraph import runs
from procgraph.cli.common import fail, load_or_exit, redis_url_or_env
from procgraph.console import STOP_SIGNALS
from procgraph.constants import REDIS_ENV
from procgraph.durability import graph_state_dir
from procgraph.errors import ProcgraphError
from procgraph.graph import GraphPlan
from procgraph.linelogs import CONSOLE_LEVEL
from procgraph.logfiles import LEVELS
from procgraph.redact import redact_url
from procgraph.safetext import printable
from procgraph.supervisor import CONNECT_TIMEOUT_S, Supervisor

#: how long ``run -d`` waits, beyond ``--connect-timeout``, for the line to be started
DETACH_WAIT_S = 60.0


def run(
    file: Annotated[Path, typer.Argument(help="graph YAML file")],
    duration: Annotated[float | None, typer.Option(help="stop after SECONDS")] = None,
    node: Annotated[str | None, typer.Option(help="start only agents placed on NODE")] = None,
    redis: Annotated[str | None, typer.Option(
        "--redis", help="use this redis:// URL for every embedded broker (default: "
        "$PROCGRAPH_REDIS; a URL with a password belongs there: every user can read a "
        "command line)")] = None,
    broker_kind: Annotated[str, typer.Option(
        "--broker-kind", help="embedded server: valkey (wheel) or redis (redis-server)")
    ] = "valkey",
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="the line's state folder (broker data, lock); default "
        "$XDG_STATE_HOME/procgraph/GRAPH or ~/.local/state/procgraph/GRAPH")] = None,
    connect_timeout: Annotated[float, typer.Option(
        "--connect-timeout", help="give up after SECONDS when a broker cannot be reached "
        "at start")] = CONNECT_TIMEOUT_S,
    detach: Annotated[bool, typer.Option(
        "--detach", "-d", help="run in the background (own session, output to "
        "<state folder>/run.log); returns once the line is started")] = False,
    log_level: Annotated[str, typer.Option(
        "--log-level", help="what replicas log to their files: debug, info, warning, error "
        "(an agent's log_level in the graph wins)")] = "info",
    console_level: Annotated[str, typer.Option(
        "--console-level", help="the agent records the console shows (all are in the log "
        "files: procgraph logs GRAPH)")] = CONSOLE_LEVEL,
    runtime: Annotated[str, typer.Option(
        "--runtime", help="how replicas run: process, or docker (each its own container of "
        "--image, through $DOCKER_HOST; an agent's runtime: in the graph wins)")] = "process",
    image: Annotated[str | None, typer.Option(
        "--image", help="the image of the containers (procgraph image build) for agents "
        "without image: in the graph")] = None,
) -> None:
    """Validate the graph, start its brokers and agent replicas, restart what dies.

    SIGINT (Ctrl-C), SIGTERM and SIGHUP stop the line; a second run of the same graph is
    refused while this one runs.
    """
    plan = load_or_exit(file)
    log_level, console_level = log_level.lower(), console_level.lower()
    for option, value in (("--log-level", log_level), ("--console-level", console_level)):
        if value.upper() not in LEVELS:
            raise fail(f"{option} {value!r}: use one of "
                       f"{', '.join(level.lower() for level in LEVELS)}")
    _apply_runtime(plan, runtime, image)
    if broker_kind not in ("valkey", "redis"):
        raise fail(f"--broker-kind {broker_kind!r}: use valkey (the wheel's server) or redis "
                   "(Debian's redis-server)")
    nodes = {a.node for a in plan.agents.values() if a.node} | {
        b.node for b in plan.brokers.values() if b.node}
    if node is not None and node not in nodes:
        raise fail(f"--node {node!r}: no agent or broker of graph {plan.name!r} is placed on it;"
                   f" nodes: {', '.join(sorted(nodes)) or 'none (nothing has node:)'}")
    if detach:
        _detach(plan, file, duration=duration, node=node, redis=redis, broker_kind=broker_kind,
                state_dir=state_dir, connect_timeout=connect_timeout,
                levels=(log_level, console_level),
                extra=["--runtime", runtime] + (["--image", image] if image else []))
        return
    if redis is not None and redact_url(redis) != redis:
        typer.secho("warning: --redis carries a password, which every user of this machine "
                    "can read in ps: set $PROCGRAPH_REDIS instead (run reads it when --redis "
                    "is not given)", fg=typer.colors.YELLOW, err=True)
    sup = Supervisor(plan, node=node, redis_url=redis_url_or_env(redis), broker_kind=broker_kind,
                     state_dir=state_dir, log_level=log_level, console_level=console_level)
    sup.handle_signals()
    try:
        code = sup.run(duration, connect_timeout_s=connect_timeout)
    except ProcgraphError as exc:
        raise fail(" ".join(str(exc).split())) from None
    finally:  # the line is stopped: later signals (GNU timeout sends two) change nothing,
        for signum in STOP_SIGNALS:  # also not while the interpreter exits
            signal.signal(signum, signal.SIG_IGN)
    raise typer.Exit(code)


def _detach(plan: GraphPlan, file: Path, *, duration: float | None, node: str | None,
            redis: str | None, broker_kind: str, state_dir: Path | None,
            connect_timeout: float, levels: tuple[str, str] = ("info", CONSOLE_LEVEL),
            extra: list[str] | None = None) -> None:
    """Start this run again in its own session, output to ``<state folder>/run.log``; wait
    until its run record says it is started; print its pid, its log and how to stop it."""
    folder = graph_state_dir(plan.name, state_dir)
    record = runs.record_path(folder, node)
    log_path = folder / "run.log"
    cmd = [sys.executable, "-m", "procgraph", "run", str(file.resolve()),
           "--broker-kind", broker_kind, "--connect-timeout", repr(connect_timeout),
           "--log-level", levels[0], "--console-level", levels[1]]
    cmd += extra or []
    if duration is not None:
        cmd += ["--duration", repr(duration)]
    if node is not None:
        cmd += ["--node", node]
    if state_dir is not None:
        cmd += ["--state-dir", str(folder)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    url = redis_url_or_env(redis)
    if url is not None:
        env[REDIS_ENV] = url  # through the environment: never on a command line
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise fail(f"cannot write the log {log_path}: {exc}") from None
    with os.fdopen(fd, "ab") as log:
        log.write(f"--- procgraph run -d at {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
                  .encode())
        log.flush()
        start = log.tell()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + connect_timeout + DETACH_WAIT_S
    found: runs.RunRecord | None = None
    while time.monotonic() < deadline:
        found = runs.RunRecord.load(record)
        if found is not None and found.pid == proc.pid and found.state == "started":
            break
        if proc.poll() is not None:
            raise fail(f"the line stopped while starting (exit code {proc.returncode}):\n"
                       + _tail(log_path, start) + f"\n(full log: {log_path})")
        time.sleep(0.1)
    else:
        raise fail(f"the line (pid {proc.pid}) is not started after "
                   f"{connect_timeout + DETACH_WAIT_S:g}s; see its log {log_path}; "
                   f"stop it with procgraph stop {plan.name}")
    assert found is not None
    typer.echo(f"graph {plan.name!r} runs in the background: pid {proc.pid}")
    for name, broker_url in found.brokers.items():
        typer.echo(f"  broker {name}: {redact_url(broker_url)}")
    if found.hmi_url:
        typer.echo(f"  HMI:    {redact_url(found.hmi_url)}")
    if found.metrics_url:
        typer.echo(f"  metrics: {redact_url(found.metrics_url)}")
    typer.echo(f"  output: {log_path}   (tail -f {log_path})")
    typer.echo(f"  logs:   procgraph logs {plan.name} [AGENT] -f   ({found.log_dir})")
    typer.echo("  list:   procgraph ps")
    typer.echo(f"  stop:   procgraph stop {plan.name}")


def _apply_runtime(plan: GraphPlan, runtime: str, image: str | None) -> None:
    """``--runtime``/``--image`` for the agents whose graph entry does not say; one error
    line for a bad value or a container agent without an image."""
    if runtime not in ("process", "docker"):
        raise fail(f"--runtime {runtime!r}: use process (each replica its own process) or "
                   "docker (each replica its own container)")
    for agent in plan.agents.values():
        if agent.runtime is None:
            agent.runtime = runtime
        if agent.runtime == "docker" and agent.image is None:
            agent.image = image
    docker = [a for a in plan.agents.values() if a.runtime == "docker"]
    if image is not None and not docker:
        raise fail("--image is for containers, but every agent runs as a process: add "
                   "--runtime docker (or runtime: docker to agents in the graph)")
    missing = [a.name for a in docker if not a.image]
    if missing:
        raise fail(f"agents {', '.join(missing)} run as containers but have no image: give "
                   "--image IMAGE (procgraph image build GRAPH --tag IMAGE makes one) or "
                   "image: in the graph")


def _tail(path: Path, start: int, lines: int = 20) -> str:
    """The last ``lines`` lines written to ``path`` after byte ``start`` (escaped)."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(printable(line, limit=500) for line in text.splitlines()[-lines:])


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(run)
