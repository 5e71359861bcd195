"""Extra commands from the ``procgraph.commands`` entry points; a broken one is only a warning."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from procgraph.cli.plugins import GROUP, load_plugins, plugin_entry_points

PLUGIN = '''
import typer

def register(app: typer.Typer) -> None:
    @app.command("hello")
    def hello(name: str = "line") -> None:
        """Say hello."""
        typer.echo(f"hello {name}")

def broken(app: typer.Typer) -> None:
    raise RuntimeError("this plugin is broken")
'''


def _app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True)

    @app.command()
    def version() -> None:
        """A command that is always there."""
        typer.echo("0.1")

    return app


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "pg_plugin_mod.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "pg_plugin_mod"


def test_a_plugin_adds_its_command(plugin_module: str) -> None:
    app = _app()
    loaded = load_plugins(app, [EntryPoint("hello", f"{plugin_module}:register", GROUP)])
    assert loaded == ["hello"]
    result = CliRunner().invoke(app, ["hello", "--name", "B"])
    assert result.exit_code == 0 and result.output == "hello B\n"


@pytest.mark.parametrize("value", ["pg_plugin_mod:broken", "pg_plugin_mod:missing",
                                   "no_such_module_for_procgraph:register"])
def test_a_broken_or_missing_plugin_is_a_warning(plugin_module: str, value: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    app = _app()
    found = [EntryPoint("bad", value, GROUP), EntryPoint("hello", "pg_plugin_mod:register", GROUP)]
    assert load_plugins(app, found) == ["hello"]
    err = capsys.readouterr().err
    assert f"warning: procgraph plugin 'bad' ({value}) not loaded" in err
    assert CliRunner().invoke(app, ["version"]).output == "0.1\n"  # the CLI still works


def test_the_builtin_agents_register_plc_sim() -> None:
    """pyproject names the PLC simulator's command; the framework itself imports no agent."""
    names = {ep.name: ep.value for ep in plugin_entry_points()}
    assert names.get("plc-sim") == "procgraph.agents.modbus.cli:register", (
        "reinstall: pip install -e . --no-deps -q")
