"""Issue 10 item 7: ``--version``, shell completion, ``validate`` of several files and
``graph --format html`` (a page that draws the graph with nothing to install)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from procgraph import __version__
from procgraph.cli.main import app
from procgraph.graph import load_graph

ROOT = Path(__file__).resolve().parents[2]
GRAPHS = ROOT / "graphs"


def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in-process; exit code and stdout+stderr."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_version() -> None:
    for flag in ("--version", "-V"):
        code, out = cli(flag)
        assert code == 0 and out.strip() == f"procgraph {__version__}"


def test_shell_completion_script_and_completions() -> None:
    exe = shutil.which("procgraph")
    assert exe is not None, "the procgraph console script is not installed: pip install -e ."
    # the shell named (--show-completion guesses it from the parent process, which fails
    # under CI runners and pytest: it is a flag, `bash` after it is not its value)
    done = subprocess.run([exe, "completion", "bash"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert "complete -o default -F _procgraph_completion procgraph" in done.stdout
    # what bash asks for `procgraph str<TAB>`
    env = {**os.environ, "_PROCGRAPH_COMPLETE": "complete_bash",
           "COMP_WORDS": "procgraph str", "COMP_CWORD": "1"}
    done = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["streams"], (done.stdout, done.stderr)
    _code, out = cli("--help")
    assert "--install-completion" in out
    code, out = cli("completion", "tcsh")
    assert code == 1 and "give one of bash, zsh, fish" in out


def test_validate_several_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # graphs/two-hosts.yaml has no default broker passwords: they must be given
    monkeypatch.setenv("CAMS_PASSWORD", "cams-secret-for-validate")
    monkeypatch.setenv("INFER_PASSWORD", "infer-secret-for-validate")
    good = sorted(GRAPHS.glob("*.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nagents: {a: {class: nosuchmodule:X}}\n")
    code, out = cli("validate", *map(str, good))
    assert code == 0, out
    assert out.count(": ok: graph") == len(good)
    code, out = cli("validate", str(good[0]), str(bad), str(tmp_path / "missing.yaml"))
    assert code == 1
    assert f"{good[0]}: ok" in out  # the good one is still checked and reported
    assert "nosuchmodule" in out and "missing.yaml" in out
    assert "error: 2 of 3 graphs failed" in out and "Traceback" not in out


def test_graph_html_is_self_contained(tmp_path: Path) -> None:
    page = tmp_path / "g.html"
    code, out = cli("graph", str(GRAPHS / "inspection.yaml"), "--format", "html", "-o",
                    str(page))
    assert code == 0 and "wrote" in out, out
    text = page.read_text()
    assert text.startswith("<!doctype html>")
    assert "<script" not in text and not re.search(r"(src|href)=\"https?:", text)
    svg = ET.fromstring(text[text.index("<svg"):text.index("</svg>") + 6])
    names = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")
             if t.get("class") == "name"]
    assert sorted(names) == sorted(["trigger", "front_cam", "back_cam", "front_clf",  # type: ignore[type-var]
                                    "back_clf", "join", "plc", "plc_sim", "hmi"])
    edges = list(svg.iter("{http://www.w3.org/2000/svg}path"))
    plan = load_graph(GRAPHS / "inspection.yaml")
    wired = sum(len(a.inputs) for a in plan.agents.values())  # one edge per wired input
    assert wired == 13 and len([e for e in edges if e.get("class") == "edge"]) == wired
    code, out = cli("graph", str(GRAPHS / "inspection.yaml"), "--format", "png")
    assert code == 1 and "html, mermaid or dot" in out  # a usage error, as the other options


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_graph_html_renders_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "g.html"
    cli("graph", str(GRAPHS / "minimal.yaml"), "--format", "html", "-o", str(page))
    shot = tmp_path / "g.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1000,400", page.as_uri()],
                   capture_output=True, timeout=60, check=False)
    assert shot.is_file() and shot.stat().st_size > 5000


def test_run_checks_broker_kind_and_node_before_starting() -> None:
    """Issue 10 item 7: a bad --broker-kind or an unknown --node is one error line, exit 1,
    and nothing starts."""
    code, out = cli("run", str(GRAPHS / "minimal.yaml"), "--broker-kind", "valky")
    assert code == 1 and out.count("error:") == 1, out
    assert "--broker-kind 'valky'" in out and "valkey" in out and "Traceback" not in out
    code, out = cli("run", str(GRAPHS / "minimal.yaml"), "--node", "nowhere")
    assert code == 1 and out.count("error:") == 1, out
    assert "--node 'nowhere'" in out and "none (nothing has node:)" in out
