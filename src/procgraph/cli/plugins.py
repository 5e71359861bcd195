"""Extra ``procgraph`` commands from installed packages (entry-point group ``procgraph.commands``).

The framework imports no agent: a package that brings a command (the built-in agents bring
``plc-sim``) names a ``register(app: typer.Typer) -> None`` function in its metadata::

    [project.entry-points."procgraph.commands"]
    plc-sim = "procgraph.agents.modbus.cli:register"

A plugin that cannot be imported or fails to register is reported on stderr and left out;
the other commands keep working.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import typer

GROUP = "procgraph.commands"


def plugin_entry_points() -> list[EntryPoint]:
    """The installed entry points of the ``procgraph.commands`` group, by name."""
    return sorted(entry_points(group=GROUP), key=lambda ep: ep.name)


def load_plugins(app: typer.Typer, found: list[EntryPoint] | None = None) -> list[str]:
    """Let every plugin add its commands to ``app``; return the names of those that did."""
    loaded: list[str] = []
    for ep in plugin_entry_points() if found is None else found:
        try:
            register = ep.load()
            register(app)
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            typer.secho(f"warning: procgraph plugin {ep.name!r} ({ep.value}) not loaded: "
                        f"{type(exc).__name__}: {exc}", fg=typer.colors.YELLOW, err=True)
            continue
        loaded.append(ep.name)
    return loaded
