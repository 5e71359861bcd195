"""The ``procgraph`` command: one sub-module per command, combined here, plus plugins."""

from __future__ import annotations

from typing import Annotated

import typer

from procgraph import __version__
from procgraph.cli import (
    agent_cmd,
    audit_cmd,
    check_cmd,
    deploy_cmd,
    graph_cmd,
    info_cmd,
    model_cmd,
    new_cmd,
    record_cmd,
    run_cmd,
    runs_cmd,
    streams_cmd,
    tap_cmd,
    top_cmd,
    validate_cmd,
)
from procgraph.cli.plugins import load_plugins

app = typer.Typer(
    name="procgraph",
    help="Run industrial edge-AI lines as graphs of agents on Redis streams.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, pwsh)
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"procgraph {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_print_version, is_eager=True,
        help="print the version and exit")] = False,
) -> None:
    """Run industrial edge-AI lines as graphs of agents on Redis streams."""
for module in (validate_cmd, graph_cmd, run_cmd, runs_cmd, tap_cmd, streams_cmd, top_cmd,
               check_cmd, audit_cmd, record_cmd, model_cmd, info_cmd, deploy_cmd, new_cmd,
               agent_cmd):
    module.register(app)
load_plugins(app)  # commands of installed packages (procgraph.commands entry points)


def main() -> None:
    """Console-script entry point."""
    app()
