"""The command line: validate, graph, help in-process; run, Ctrl-C, ps and tap for real."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pgtest_procs import Run, alive, cmdline, descendants, env
from procgraph.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ROOT / "graphs" / "minimal.yaml"
AGENT_LINE = re.compile(r"^\s*(counter|scale|printer)\[\d+\] \| ")
TAP_LINE = re.compile(r"""^\d+-\d+ Reading key='n\d+' \{"value":\d+\.0,"seq":\d+\}$""")
REPLICAS = {("counter", "0"), ("scale", "0"), ("scale", "1"), ("printer", "0")}

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


# -- in-process commands ---------------------------------------------------------------------
def test_help_lists_the_commands() -> None:
    code, out = cli("--help")
    assert code == 0
    for command in ("run", "validate", "graph", "tap", "agent"):
        assert re.search(rf"\b{command}\b", out), f"{command} missing from --help:\n{out}"


def test_no_arguments_shows_help() -> None:
    code, out = cli()
    assert code in (0, 2)
    assert "validate" in out


def test_validate_ok() -> None:
    code, out = cli("validate", str(MINIMAL))
    assert code == 0, out
    assert "ok" in out
    assert "graph 'minimal', 3 agents (4 replicas), 2 edges, 1 broker(s)" in out


BROKEN = """\
name: broken
agents:
  counter: {class: "procgraph.examples:Counter"}
  printer:
    class: procgraph.examples:Printer
    inputs:
      items: counter.nope
"""


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    file = tmp_path / "broken.yaml"
    file.write_text(BROKEN)
    return file


def test_validate_broken_graph_names_file_and_line_without_traceback(broken: Path) -> None:
    code, out = cli("validate", str(broken))
    assert code == 1
    assert f"{broken}:7:" in out
    assert "agent 'counter' has no output 'nope'" in out
    assert "fix: outputs of counter: out" in out
    assert "Traceback" not in out


def test_validate_broken_graph_in_a_real_process(broken: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "procgraph", "validate", str(broken)],
                          capture_output=True, text=True, timeout=60, env=env())
    assert proc.returncode == 1
    assert f"{broken}:7:" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("text", ["name: [\n", "name: x\nagents: {a: {class: nomod:X}}\n"])
def test_validate_other_errors_exit_1_without_traceback(tmp_path: Path, text: str) -> None:
    file = tmp_path / "g.yaml"
    file.write_text(text)
    code, out = cli("validate", str(file))
    assert code == 1
    assert str(file) in out and "Traceback" not in out


def test_validate_missing_file() -> None:
    code, out = cli("validate", "/nonexistent/graph.yaml")
    assert code == 1
    assert "cannot read the graph file" in out
    assert "Traceback" not in out


def test_graph_prints_mermaid() -> None:
    code, out = cli("graph", str(MINIMAL))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "flowchart LR"
    assert any(ln.strip().startswith('scale["scale<br/><small>Scale x2') for ln in lines)
    assert "    counter -->|out → readings| scale" in lines
    assert "    scale -->|scaled → items| printer" in lines


def test_graph_prints_dot() -> None:
    code, out = cli("graph", str(MINIMAL), "--format", "dot")
    assert code == 0, out
    assert out.startswith('digraph "minimal" {')
    assert '"counter" -> "scale" [label="out → readings"];' in out
    assert out.rstrip().endswith("}")


def test_graph_dashes_latest_edges(tmp_path: Path) -> None:
    file = tmp_path / "g.yaml"
    file.write_text(BROKEN.replace("counter.nope", "{from: counter.out, policy: latest}"))
    assert "counter -.->|out → items| printer" in cli("graph", str(file))[1]
    assert 'style="dashed"' in cli("graph", str(file), "-f", "dot")[1]


def test_graph_unknown_format() -> None:
    code, out = cli("graph", str(MINIMAL), "--format", "svgz")
    assert code == 1  # usage errors: one error: line, exit 1 (docs/cli.md)
    assert "mermaid or dot" in out


def test_graph_of_a_broken_graph(broken: Path) -> None:
    code, out = cli("graph", str(broken))
    assert code == 1 and f"{broken}:7:" in out


# -- real processes --------------------------------------------------------------------------
def _processes_naming(needle: str) -> list[tuple[int, str]]:
    hits = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            cmd = cmdline(int(entry.name))
            if needle in cmd and alive(int(entry.name)):
                hits.append((int(entry.name), cmd))
    return hits


@pytest.fixture
def graph_copy(tmp_path: Path) -> Path:
    """minimal.yaml at a unique path, so its processes can be found by command line."""
    file = tmp_path / "minimal.yaml"
    shutil.copy(MINIMAL, file)
    return file


@pytest.mark.slow
def test_run_with_duration(graph_copy: Path) -> None:
    # 4 replicas start slowly on a loaded 2-core box; the printer's info lines on the console
    run = Run(graph_copy, "--duration", "8", "--console-level", "info")
    code = run.finish(60)
    out = run.output
    assert code == 0, out
    assert re.search(r"printer\[0\] \| .*got 100 items", out), out
    assert "supervisor | graph 'minimal': 4 replica(s) of 3 agent(s) started" in out
    assert "supervisor | --duration 8s reached" in out
    assert "supervisor | stopping 4 replica(s)" in out
    assert "supervisor | broker 'main' stopped" in out
    assert "Traceback" not in out
    assert _processes_naming(str(graph_copy)) == []


@pytest.fixture
def running(graph_copy: Path) -> Iterator[Run]:
    """A running minimal graph; stopped with Ctrl-C at the end if the test did not."""
    run = Run(graph_copy, "--console-level", "info")  # the agents' info lines too
    run.wait_line(r"4 replica\(s\) of 3 agent\(s\) started")
    yield run
    if run.proc.poll() is None:
        run.ctrl_c()
        run.finish()


@pytest.mark.slow
def test_ctrl_c_stops_everything_cleanly(running: Run) -> None:
    running.wait_line(AGENT_LINE)
    family = descendants(running.proc.pid)
    assert len(family) >= 5, family  # 4 replicas and the embedded broker
    assert any("valkey-server" in cmd for cmd in family.values()), family
    running.ctrl_c()
    code = running.finish()
    out = running.output
    assert code == 0, out
    assert "supervisor | SIGINT: stopping" in out
    assert "supervisor | broker 'main' stopped" in out
    assert "Traceback" not in out
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {pid: cmd for pid, cmd in family.items() if alive(pid)}
    assert not left, f"processes left behind: {left}"
    assert _processes_naming(str(running.graph)) == []


@pytest.mark.slow
def test_replica_command_lines_name_graph_agent_and_replica(running: Run) -> None:
    graph = str(running.graph)
    replicas = set()
    for cmd in descendants(running.proc.pid).values():
        if " agent " in cmd:
            words = cmd.split()
            i = words.index("agent")
            assert words[i + 1] == graph, cmd
            replicas.add((words[i + 2], words[i + 3]))
    assert replicas == REPLICAS


@pytest.mark.slow
def test_tap_prints_entries_of_a_running_graph(running: Run) -> None:
    url = running.wait_line(r"embedded valkey at (redis://\S+)").group(1)
    code, out = cli("tap", "pg:minimal:counter:out", "--redis", url, "--count", "3")
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 3, out
    for line in lines:
        assert TAP_LINE.match(line), line
    code, out = cli("tap", "pg:minimal:scale:scaled", "--redis", url, "--count", "2",
                    "--from-start")
    assert code == 0, out
    assert [ln.split()[1] for ln in out.splitlines()] == ["Reading", "Reading"]
    assert all("key='n" in ln for ln in out.splitlines())  # the scaler kept the keys


def test_tap_unreachable_broker_exits_1() -> None:
    code, out = cli("tap", "pg:x:y:z", "--redis", "redis://127.0.0.1:1", "--count", "1")
    assert code == 1
    assert "cannot reach redis://127.0.0.1:1" in out
    assert "Traceback" not in out
