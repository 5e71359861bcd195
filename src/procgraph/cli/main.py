"""The ``procgraph`` command: one sub-module per command, combined here."""

from __future__ import annotations

import typer

from procgraph.cli import agent_cmd, graph_cmd, run_cmd, tap_cmd, validate_cmd

app = typer.Typer(
    name="procgraph",
    help="Run industrial edge-AI lines as graphs of agents on Redis streams.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
for module in (validate_cmd, graph_cmd, run_cmd, tap_cmd, agent_cmd):
    module.register(app)


def _register_optional() -> None:
    """Commands that live with the agents they belong to."""
    import importlib

    for name in ("procgraph.cli.check_cmd", "procgraph.cli.model_cmd", "procgraph.cli.plc_cmd", "procgraph.cli.top_cmd",
                 "procgraph.cli.record_cmd", "procgraph.cli.deploy_cmd", "procgraph.cli.new_cmd"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


_register_optional()


def main() -> None:
    """Console-script entry point."""
    app()
