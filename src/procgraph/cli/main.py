"""The ``procgraph`` command: one sub-module per command, combined here, plus plugins."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from procgraph import __version__
from procgraph.cli import (
    agent_cmd,
    audit_cmd,
    check_cmd,
    deploy_cmd,
    graph_cmd,
    image_cmd,
    info_cmd,
    logs_cmd,
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
from procgraph.cli.common import fail, usage_error
from procgraph.cli.plugins import load_plugins

_click: Any  # the click typer uses: its own copy (typer >= 0.20) or the click package
try:
    _click = importlib.import_module("typer._click")
except ImportError:  # pragma: no cover - older typer on click
    _click = importlib.import_module("click")


class ProcgraphGroup(TyperGroup):
    """The root command: usage errors (unknown option or command, missing argument, bad
    value) print one ``error:`` line and a ``try: ... --help`` line and exit 1, as every
    other error does, instead of click's usage box and exit code 2."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        """Run the command line; usage errors as one ``error:`` line and exit 1."""
        code = 0
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False,
                              windows_expand_args=windows_expand_args, **extra)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except _click.exceptions.NoArgsIsHelpError as exc:  # `procgraph`, `procgraph model`
            text = exc.format_message()  # with rich the help is printed already
            if text:
                typer.echo(text)
        except _click.exceptions.UsageError as exc:
            ctx = exc.ctx
            path = ctx.command_path if ctx is not None else (prog_name or "procgraph")
            usage_error(exc.format_message(), path)
            code = 1
        except _click.exceptions.ClickException as exc:  # e.g. a file option that won't open
            usage_error(exc.format_message(), None)
            code = 1
        except typer.Abort:
            typer.secho("error: aborted", fg=typer.colors.RED, err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code)


app = typer.Typer(
    name="procgraph",
    cls=ProcgraphGroup,
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
SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


@app.command()
def completion(
    shell: Annotated[str, typer.Argument(help="bash, zsh, fish, powershell or pwsh")],
) -> None:
    """Print the shell completion script for SHELL (source it, or put it in your rc file).

    Unlike ``--show-completion`` it does not guess the shell from the parent process, so it
    works from scripts, containers and provisioning tools too.
    """
    from typer._completion_shared import get_completion_script

    if shell not in SHELLS:
        raise fail(f"completion {shell!r}: give one of {', '.join(SHELLS)}")
    typer.echo(get_completion_script(prog_name="procgraph", complete_var="_PROCGRAPH_COMPLETE",
                                     shell=shell))


for module in (validate_cmd, graph_cmd, run_cmd, runs_cmd, logs_cmd, tap_cmd, streams_cmd,
               top_cmd, check_cmd, audit_cmd, record_cmd, model_cmd, info_cmd, deploy_cmd,
               image_cmd, new_cmd, agent_cmd):
    module.register(app)
load_plugins(app)  # commands of installed packages (procgraph.commands entry points)


def main() -> None:
    """Console-script entry point."""
    app()
