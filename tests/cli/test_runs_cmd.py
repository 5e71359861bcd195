"""``procgraph run -d``, ``ps``, ``stop`` and finding a running line's broker (issue 10 item 1),
with real ``procgraph run`` processes."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import typer
from typer.testing import CliRunner

from pgtest_procs import Run, alive, env, kill_family
from pgtest_util import wait_for
from procgraph import runs
from procgraph.cli import common
from procgraph.cli.main import app
from procgraph.graph import load_graph

runner = CliRunner()
PASSWORD = "s3cret-pw-zz"
GRAPH = """
name: found
brokers: {main: {url: embedded, password: PASSWORD}}
agents:
  counter: {class: "procgraph.examples:Counter", params: {rate_hz: 50}}
""".replace("PASSWORD", PASSWORD)


def _cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "procgraph", *args], capture_output=True,
                          text=True, env=env(), timeout=timeout_s)


def test_run_detach_then_ps_check_and_stop(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """run -d returns once started (pid, log, how to stop); ps lists it with the password
    masked; check finds its broker without --redis; stop ends it and its record."""
    monkeypatch.delenv("PROCGRAPH_REDIS", raising=False)
    graph = tmp_path / "found.yaml"
    graph.write_text(GRAPH)
    started = _cli("run", "-d", str(graph))
    m = re.search(r"runs in the background: pid (\d+)", started.stdout)
    assert started.returncode == 0 and m, started.stdout + started.stderr
    pid = int(m.group(1))
    try:
        assert alive(pid)
        assert "procgraph stop found" in started.stdout
        log = Path(re.search(r"output:\s+(\S+)", started.stdout).group(1))  # type: ignore[union-attr]
        assert log.is_file() and "agent(s) started" in log.read_text()
        assert PASSWORD not in started.stdout + started.stderr
        listed = runner.invoke(app, ["ps"])
        assert listed.exit_code == 0, listed.output
        row = next(line for line in listed.output.splitlines() if line.startswith("found"))
        assert str(pid) in row and "started" in row and str(graph.resolve()) in row
        assert "main=redis://:***@127.0.0.1:" in row and PASSWORD not in listed.output
        def checked() -> bool:  # its broker found without --redis, once its heartbeat is
            result = runner.invoke(app, ["check", str(graph)])
            return result.exit_code == 0 and "1 replica(s) alive" in result.output

        wait_for(checked, 20, "procgraph check of the detached line")
        stopped = runner.invoke(app, ["stop", "found", "--timeout", "25"])
        assert stopped.exit_code == 0, stopped.output
        assert f"stopped graph 'found' (pid {pid})" in stopped.output
        assert not alive(pid)
        assert runs.find_runs(include_stale=True) == []
        assert "no running lines" in runner.invoke(app, ["ps"]).output
        assert "broker 'main' stopped" in log.read_text()
    finally:
        if alive(pid):
            kill_family(pid)


def test_stream_broker_url_and_broker_urls_find_the_running_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --redis: a pg:<graph>:... stream and the graph's embedded broker resolve to
    the running line's broker; --redis still wins."""
    monkeypatch.delenv("PROCGRAPH_REDIS", raising=False)
    graph = tmp_path / "found.yaml"
    graph.write_text(GRAPH)
    run = Run(graph)
    try:
        run.wait_line(r"agent\(s\) started")
        for _ in range(100):
            if runs.find_runs():
                break
            time.sleep(0.1)
        url = common.stream_broker_url("pg:found:counter:out", None)
        assert PASSWORD in url and redis.Redis.from_url(url).xlen("pg:found:counter:out") >= 0
        assert common.broker_urls(load_graph(graph), None) == {"main": url}
        assert common.stream_broker_url("pg:found:x:y", "redis://other:1") == "redis://other:1"
        run.ctrl_c()
        assert run.finish() == 0
    finally:
        run.stop()


def test_no_running_line_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """No line: stream_broker_url, broker_urls and stop each say what to do, exit 1."""
    monkeypatch.delenv("PROCGRAPH_REDIS", raising=False)
    for stream in ("pg:nothere:a:b", "plain-stream"):
        with pytest.raises(typer.Exit) as exc:
            common.stream_broker_url(stream, None)
        assert exc.value.exit_code == 1
    err = capsys.readouterr().err
    assert "no running line of graph 'nothere'" in err and "--redis" in err
    assert "is not a stream of a line" in err
    graph = tmp_path / "found.yaml"
    graph.write_text(GRAPH.replace(f"password: {PASSWORD}", "port: null"))
    with pytest.raises(typer.Exit):
        common.broker_urls(load_graph(graph), None)
    assert "or start the line" in capsys.readouterr().err
    result = runner.invoke(app, ["stop", "nothere"])
    assert result.exit_code == 1 and "error: no running line 'nothere'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["ps"])
    assert result.exit_code == 0 and "no running lines" in result.output


def test_run_detach_reports_a_line_that_fails_to_start(tmp_path: Path) -> None:
    """run -d of a line that cannot start: exit 1, the log's last lines, no record left."""
    graph = tmp_path / "bad.yaml"
    graph.write_text("name: bad\nbrokers: {main: {url: 'redis://127.0.0.1:1'}}\n"
                     "agents:\n  counter: {class: 'procgraph.examples:Counter'}\n")
    result = _cli("run", "-d", str(graph), "--connect-timeout", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error: the line stopped while starting" in result.stderr
    assert "full log:" in result.stderr and "Traceback" not in result.stderr
    assert runs.find_runs(include_stale=True) == []
