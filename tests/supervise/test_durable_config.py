"""Durable broker configuration: the graph keys, the state folder rule, the data folder itself."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import redis

from procgraph.brokers import EmbeddedBroker
from procgraph.durability import (
    BrokerWatch,
    broker_data_dir,
    default_state_root,
    graph_state_dir,
    lost_line,
)
from procgraph.errors import BrokerError, GraphError
from procgraph.graph import GraphPlan, load_graph


def plan_of(tmp_path: Path, brokers: str) -> GraphPlan:
    """A one-agent graph with the given ``brokers:`` mapping."""
    (tmp_path / "g.yaml").write_text(
        f"name: g\nbrokers: {brokers}\n"
        "agents:\n  c: {class: 'procgraph.examples:Counter'}\n")
    return load_graph(tmp_path / "g.yaml")


def test_persistence_keys(tmp_path: Path) -> None:
    spec = plan_of(tmp_path, "{main: {}}").brokers["main"]
    assert spec.persistence is not None and spec.persistence.appendfsync == "everysec"
    assert plan_of(tmp_path, "{main: {persistence: none}}").brokers["main"].persistence is None
    always = plan_of(tmp_path, "{main: {persistence: {appendfsync: always}}}").brokers["main"]
    assert always.persistence is not None and always.persistence.appendfsync == "always"
    mem = plan_of(tmp_path, "{main: {persistence: none}, ext: {url: 'redis://db:6379'}}")
    assert GraphPlan.model_validate_json(mem.model_dump_json()) == mem  # plain data


@pytest.mark.parametrize(("brokers", "said"), [
    ("{main: {persistence: {appendfsync: sometimes}}}",
     "brokers.main.persistence.appendfsync: Input should be 'everysec', 'always' or 'no'"),
    ("{main: {persistence: {fsync: always}}}", "did you mean 'appendfsync'?"),
    ("{main: {persistence: yes}}",
     "brokers.main.persistence: Value error, must be 'none' or {appendfsync: everysec|always|no}"),
    ("{main: {url: 'redis://db:6379', persistence: none}}",
     "persistence applies to an embedded broker only; for a server at redis://db:6379 turn on "
     "its own persistence (appendonly yes)"),
    ("{main: {url: 'redis://db:6379', data_dir: d}}", "data_dir applies to an embedded broker"),
    ("{main: {data_dir: d, persistence: none}}",
     "data_dir is set but persistence is 'none': remove one of them"),
])
def test_persistence_errors_say_what_to_fix(tmp_path: Path, brokers: str, said: str) -> None:
    with pytest.raises(GraphError) as err:
        plan_of(tmp_path, brokers)
    assert said in str(err.value)


def test_state_folder_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert default_state_root() == tmp_path / "home" / ".local" / "state" / "procgraph"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the XDG rule: absolute only
    assert graph_state_dir("line") == tmp_path / "home" / ".local" / "state" / "procgraph" / "line"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert graph_state_dir("line") == tmp_path / "xdg" / "procgraph" / "line"
    assert graph_state_dir("line", tmp_path / "mine") == tmp_path / "mine"  # --state-dir


def test_data_folder_of_each_broker(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "{main: {}, fast: {data_dir: disk/fast}, mem: {persistence: none}, "
                             "ext: {url: 'redis://db:6379'}}")
    assert broker_data_dir(plan, "main", tmp_path / "s") == tmp_path / "s" / "brokers" / "main"
    assert broker_data_dir(plan, "fast", tmp_path / "s") == tmp_path / "disk" / "fast"
    assert broker_data_dir(plan, "mem", tmp_path / "s") is None
    assert broker_data_dir(plan, "ext", tmp_path / "s") is None


def test_a_broker_without_a_data_folder_keeps_nothing_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # what the test fixtures start
    with EmbeddedBroker() as server:
        assert not server.persistent
        assert redis.Redis.from_url(server.url).config_get("appendonly") == {"appendonly": "no"}
        folder = server.dir
    assert not folder.exists() and not (tmp_path / "home").exists()


def test_one_server_per_data_folder(tmp_path: Path) -> None:
    with EmbeddedBroker(data_dir=tmp_path / "d") as first:
        assert first.proc is not None
        with pytest.raises(BrokerError, match=rf"data folder {tmp_path / 'd'} is in use by "
                           rf"another broker \(pid {first.proc.pid}\)"):
            EmbeddedBroker(data_dir=tmp_path / "d").start()
    with EmbeddedBroker(data_dir=tmp_path / "d"):  # free again once the first one closed
        pass


@pytest.mark.parametrize("kind", ["valkey", "redis"])
@pytest.mark.parametrize("fsync", ["everysec", "always"])
def test_acknowledged_writes_survive_kill_9(tmp_path: Path, kind: str, fsync: str) -> None:
    if kind == "redis" and shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    server = EmbeddedBroker(kind=kind, data_dir=tmp_path / "d", appendfsync=fsync).start()
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        client.xgroup_create("s", "g", id="0", mkstream=True)
        acked = 0
        end = time.monotonic() + 0.5
        while time.monotonic() < end:  # writing flat out when the kill comes
            client.xadd("s", {"n": acked})
            acked += 1
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        server.proc = None
        server.start()  # same port, same folder: what the supervisor does
        kept = client.xlen("s")
        print(f"{kind} appendfsync {fsync}: {acked} acknowledged, {kept} after kill -9")
        assert kept == acked
        assert [g["name"] for g in client.xinfo_groups("s")] == [b"g"]
        client.close()
    finally:
        server.close()
    aof = tmp_path / "d" / "appendonlydir"  # the Valkey 9 / Redis 7 multi-part layout
    assert {p.suffix for p in aof.iterdir()} >= {".manifest", ".rdb", ".aof"}


def test_the_data_lost_line_names_the_broker_the_loss_and_the_fix(tmp_path: Path) -> None:
    aof = BrokerWatch("main", "redis://127.0.0.1:1", True, tmp_path / "d")
    assert lost_line(aof, "came back empty") == (
        f"data lost: broker 'main' (embedded, AOF in {tmp_path / 'd'}) came back empty: its "
        "streams' backlog, consumer groups and agent state (sequence counters, written keys) "
        f"are gone; check its data folder {tmp_path / 'd'} and {tmp_path / 'd'}/broker.log; "
        "counted as broker_data_lost")
    other = BrokerWatch("cell", "redis://10.0.0.5:6400", False, None, node="b")
    assert "broker 'cell' (embedded on node 'b', redis://10.0.0.5:6400) came back empty" in \
        lost_line(other, "came back empty")
    assert "see the supervisor log on node 'b'" in lost_line(other, "came back empty")
