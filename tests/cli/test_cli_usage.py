"""Issue 10 item 7: usage errors are one ``error:`` line (+ ``try: ... --help``) and exit 1,
as docs/cli.md promises; ``procgraph model`` finds the running line's broker from --graph."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pgtest_util import wait_for
from procgraph.cli.main import app
from procgraph.runs import find_runs

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ROOT / "graphs" / "minimal.yaml"


def tiny_model(value: float) -> bytes:
    """A valid ONNX model, from tests/registry/registry_models.py (not on the test path)."""
    spec = importlib.util.spec_from_file_location(
        "registry_models", ROOT / "tests" / "registry" / "registry_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return bytes(module.tiny_model(value))


def cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process: exit code, stdout, stderr."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(("args", "error", "try_"), [
    (["--bogus"], "error: no such option: --bogus", "procgraph"),
    (["nope"], "error: no such command 'nope'", "procgraph"),
    (["stram"], "error: no such command 'stram'. Did you mean 'streams'?", "procgraph"),
    (["validate"], "error: missing argument 'FILE...'", "procgraph validate"),
    (["run", str(MINIMAL), "--nope"], "error: no such option: --nope", "procgraph run"),
    (["top", str(MINIMAL), "--interval", "abc"],
     "error: invalid value for '--interval': Input should be a valid number", "procgraph top"),
    (["graph", str(MINIMAL), "--format", "svgz"],
     "error: invalid value for --format: use html, mermaid or dot", "procgraph graph"),
    (["model", "list", "--bogus"], "error: no such option: --bogus", "procgraph model list"),
    (["model", "push"], "error: missing argument 'name'", "procgraph model push"),
])
def test_usage_errors_are_one_error_line_and_exit_1(args: list[str], error: str,
                                                    try_: str) -> None:
    code, out, err = cli(*args)
    assert code == 1, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(error), err
    assert lines[1] == f"try: {try_} --help"
    assert out == "" and "Usage:" not in err and "╭" not in err and "Traceback" not in err


def test_usage_error_of_the_installed_command() -> None:
    exe = shutil.which("procgraph")
    assert exe is not None, "the procgraph console script is not installed: pip install -e ."
    done = subprocess.run([exe, "tap"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == ["error: missing argument 'stream'",
                                        "try: procgraph tap --help"]


def test_control_characters_in_a_bad_argument_are_escaped() -> None:
    code, _out, err = cli("nope\x1b[2J\nerror: forged")
    lines = err.splitlines()
    assert code == 1 and len(lines) == 2 and "\x1b" not in err, err
    assert lines[0] == "error: no such command 'nope\\x1b[2J\\nerror: forged'"


def test_no_command_shows_the_help_and_exits_0() -> None:
    for args in ([], ["model"]):
        code, out, _err = cli(*args)
        assert code == 0 and "Usage: procgraph" in out, out
    code, out, _err = cli("--version")
    assert code == 0 and out.startswith("procgraph ")


FOLLOWER = '''
from procgraph import Agent
from pgtest_agents import Numbers


class Follower(Numbers):
    """A source whose params follow a registry model; accepts any model that is not empty."""

    class Params(Numbers.Params):
        model: str = "registry:parts"

    @staticmethod
    def check_model(params: object, data: bytes) -> None:
        if not data:
            raise ValueError("empty model")
'''

LINE = """
name: modeline
brokers:
  main: {url: embedded}
agents:
  follower: {class: "follower:Follower", params: {count: 0, model: "registry:parts"}}
"""


def test_model_commands_find_the_running_lines_broker(
        run_graph: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROCGRAPH_REDIS", raising=False)
    monkeypatch.delenv("PROCGRAPH_BROKERS", raising=False)
    (tmp_path / "follower.py").write_text(FOLLOWER)
    model = tmp_path / "a.onnx"
    model.write_bytes(tiny_model(0.1))
    graph = tmp_path / "graph.yaml"
    code, _out, err = cli("model", "list", "--graph", "modeline")
    assert code == 1 and "no running line of graph 'modeline'" in err, err
    with run_graph(LINE):
        assert wait_for(lambda: any(r.graph == "modeline" and r.brokers for r in find_runs()),
                        timeout_s=20)
        url = next(r for r in find_runs() if r.graph == "modeline").brokers["main"]
        code, out, err = cli("model", "push", "parts", str(model), "--graph", str(graph))
        assert code == 0 and "parts: version 1 is current" in out, (out, err)
        code, out, err = cli("model", "list", "--graph", "modeline")  # by name
        assert code == 0 and url in out and "parts" in out, (out, err)
        code, out, err = cli("model", "push", "parts", str(model), "--graph", "modeline",
                             "--agent", "follower", "--version", "v2")
        assert code == 0 and "version v2 is current" in out, (out, err)
        code, out, err = cli("model", "rollback", "parts", "--graph", "modeline")
        assert code == 0 and "version 1 is current again" in out, (out, err)
        code, out, err = cli("model", "list", "--graph", "modeline", "--agent", "nobody")
        assert code == 1 and "no agent 'nobody'" in err, err
