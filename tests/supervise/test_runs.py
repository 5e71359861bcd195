"""Run records (issue 10 item 1): written private while a line runs, removed on a clean stop,
stale after a kill; their fields, the pointer index and update_record."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import redis
from supervise_util import Run, kill_family, write_graph

from pgtest_util import wait_for
from procgraph import runs
from procgraph.durability import default_state_root

ONE = """
name: recorded
brokers: {main: {url: embedded}}
agents:
  counter: {class: "procgraph.examples:Counter"}
"""


def test_a_running_line_has_a_private_record_removed_on_a_clean_stop(tmp_path: Path) -> None:
    """The record names the graph, its absolute file, the supervisor pid, host and a broker
    URL that answers; mode 0600; ``state`` reaches started; Ctrl-C removes it and its
    pointer."""
    graph = write_graph(tmp_path, ONE)
    state = tmp_path / "state"
    run = Run(graph, state_dir=state)
    try:
        run.wait_line(r"replica\(s\) of 1 agent\(s\) started")
        path = state / runs.RECORD_NAME
        wait_for(lambda: getattr(runs.RunRecord.load(path), "state", None) == "started", 10)
        record = runs.RunRecord.load(path)
        assert record is not None, run.output
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert record.graph == "recorded" and record.file == str(graph.resolve())
        assert record.pid == run.proc.pid and record.local and not record.stale
        assert record.state == "started" and record.node is None
        assert redis.Redis.from_url(record.brokers["main"]).ping()
        assert [r.path for r in runs.find_runs()] == [path.resolve()]
        assert [r.pid for r in runs.runs_of("recorded")] == [run.proc.pid]
        assert [r.pid for r in runs.runs_of(str(graph))] == [run.proc.pid]
        run.ctrl_c()
        assert run.finish() == 0
        assert not path.exists()
        assert not list((default_state_root() / runs.INDEX_DIRNAME).iterdir())
        assert runs.find_runs(include_stale=True) == []
    finally:
        run.stop()


def test_a_killed_supervisor_leaves_a_stale_record(tmp_path: Path) -> None:
    """kill -9 of the supervisor: its record stays, marked stale, and is not listed as
    running; the next run of the graph replaces it."""
    graph = write_graph(tmp_path, ONE)
    run = Run(graph)
    try:
        run.wait_line(r"agent\(s\) started")
        kill_family(run.proc.pid)
        run.proc.wait(10)
        assert runs.find_runs() == []
        stale = runs.find_runs(include_stale=True)
        assert [r.pid for r in stale] == [run.proc.pid] and stale[0].stale
    finally:
        run.stop()
    again = Run(graph)
    try:
        again.wait_line(r"agent\(s\) started")
        assert [r.pid for r in runs.find_runs(include_stale=True)] == [again.proc.pid]
        again.ctrl_c()
        assert again.finish() == 0
    finally:
        again.stop()


def test_update_record_sets_fields_and_keeps_the_mode(tmp_path: Path) -> None:
    """update_record (the metrics server's setter) on the folder or the file; False when no
    record; a record of another pid is not removed by this process."""
    assert runs.update_record(tmp_path, metrics_url="http://x") is False
    path = runs.record_path(tmp_path)
    runs.write_record(path, graph="g", file="/g.yaml", pid=os.getpid(), host="", node=None,
                      started=1.0, brokers={"main": "redis://:pw@127.0.0.1:1"}, state="starting")
    assert runs.update_record(tmp_path, metrics_url="http://127.0.0.1:9/metrics")
    assert runs.update_record(path, state="started")
    record = runs.RunRecord.load(path)
    assert record is not None and record.metrics_url == "http://127.0.0.1:9/metrics"
    assert record.state == "started" and stat.S_IMODE(path.stat().st_mode) == 0o600
    other = runs.record_path(tmp_path, node="n1")
    runs.write_record(other, graph="g", file="/g.yaml", pid=1, host="", node="n1", started=2.0)
    runs.remove_record(other)
    assert other.exists()  # pid 1's record is not ours to remove
    runs.remove_record(path)
    assert not path.exists()


def test_the_hmi_url_comes_from_the_agent_that_serves_the_public_page(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """inspection.yaml: the HMI (serves "public") gives the URL, not the PLC simulator
    (serves "internal", Modbus); a graph without one has none."""
    from procgraph.graph import load_graph

    monkeypatch.delenv("HMI_HOST", raising=False)
    monkeypatch.delenv("HMI_PORT", raising=False)

    graphs = Path(__file__).parent.parent.parent / "graphs"
    assert runs.hmi_url(load_graph(graphs / "inspection.yaml")) == "http://127.0.0.1:8080/"
    assert runs.hmi_url(load_graph(graphs / "minimal.yaml")) is None
