"""A broker that comes back without its data is said in one line and counted.

``persistence: none`` (the old in-memory broker) and an external server restarted empty: the
supervisor notices the line's epoch marker is gone, prints one ``data lost:`` line and adds one
to ``broker_data_lost`` in that broker's line counters. Real processes, real ``kill -9``.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.constants import epoch_key
from procgraph.errors import BrokerError
from procgraph.graph import load_graph
from procgraph.health import read_line_counters
from procgraph.supervisor import Supervisor

TESTS = Path(__file__).parent.parent

GRAPH = """
name: {name}
brokers: {{main: {broker}}}
agents:
  numbers: {{class: "pgtest_agents:Numbers", params: {{count: 50}}}}
  rec: {{class: "pgtest_agents:Recorder", inputs: {{items: numbers.out}}}}
"""


@contextmanager
def line(tmp_path: Path, name: str, broker: str,
         kind: str = "valkey") -> Iterator[tuple[Supervisor, io.StringIO]]:
    """Run numbers -> recorder under a real supervisor thread, state folder under tmp_path."""
    shutil.copy(TESTS / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    (tmp_path / "graph.yaml").write_text(GRAPH.format(name=name, broker=broker))
    out = io.StringIO()
    sup = Supervisor(load_graph(tmp_path / "graph.yaml"), out=out, colour=False,
                     broker_kind=kind, state_dir=tmp_path / "state")
    sup.start_in_thread()
    try:
        yield sup, out
    finally:
        sup.shutdown()
        print(out.getvalue()[-3000:])


def lost_lines(out: io.StringIO) -> list[str]:
    """The supervisor's ``data lost:`` lines."""
    return [ln for ln in out.getvalue().splitlines() if "| data lost:" in ln]


@pytest.mark.parametrize("kind", ["valkey", "redis"])
def test_persistence_none_restart_is_said_once_and_counted(tmp_path: Path, kind: str) -> None:
    if kind == "redis" and shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    with ExitStack() as stack:
        sup, out = stack.enter_context(
            line(tmp_path, "volatile", "{url: embedded, persistence: none}", kind))
        client = redis.Redis.from_url(sup.urls["main"], socket_timeout=2)
        stack.callback(client.close)
        wait_for(lambda: client.get("pgtest:numbers:done"), 15, "the source to finish")
        assert "(in memory: persistence none)" in out.getvalue()
        assert not (tmp_path / "state" / "brokers").exists()  # nothing on disk
        proc = sup.brokers["main"].proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        wait_for(lambda: lost_lines(out), 10, "the data-lost line")
        wait_for(lambda: read_line_counters(client, "volatile").get("broker_data_lost") == 1, 5,
                 "the broker_data_lost counter")
        (lost,) = lost_lines(out)  # said once
        assert lost.endswith(
            "data lost: broker 'main' (embedded, persistence: none) came back empty: its "
            "streams' backlog, consumer groups and agent state (sequence counters, written "
            "keys) are gone; to keep them, remove 'persistence: none' from brokers.main (an "
            "AOF with appendfsync everysec is the default); counted as broker_data_lost")
        assert client.get(epoch_key("volatile"))  # marked again: the next loss is said too
        assert client.xlen("pg:volatile:numbers:out") == 0  # what the line says is true
        sup.poll()
        assert len(lost_lines(out)) == 1


def test_an_external_broker_that_lost_its_data_is_said_and_counted(tmp_path: Path) -> None:
    with ExitStack() as stack:
        server = stack.enter_context(EmbeddedBroker())  # in memory: a server without AOF
        sup, out = stack.enter_context(
            line(tmp_path, "ext", f'{{url: "{server.url}"}}'))
        assert not sup.brokers  # used, not owned
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        stack.callback(client.close)
        wait_for(lambda: client.get("pgtest:numbers:done"), 15, "the source to finish")
        assert client.get(epoch_key("ext"))
        server.kill()
        server.start()  # same port, empty: as a restarted server without persistence
        wait_for(lambda: lost_lines(out), 10, "the data-lost line")
        (lost,) = lost_lines(out)
        assert f"data lost: broker 'main' ({server.url}) came back empty:" in lost
        assert "turn on that server's persistence (appendonly yes)" in lost
        wait_for(lambda: read_line_counters(client, "ext").get("broker_data_lost") == 1, 5,
                 "the broker_data_lost counter")


def test_a_durable_line_run_again_keeps_its_data_and_epoch(tmp_path: Path) -> None:
    with line(tmp_path, "again", "{url: embedded}") as (sup, out):
        client = redis.Redis.from_url(sup.urls["main"], socket_timeout=2)
        try:
            wait_for(lambda: client.scard("pgtest:rec:seen") == 50, 15, "every item recorded")
            epoch = client.get(epoch_key("again"))
        finally:
            client.close()
    assert (tmp_path / "state" / "brokers" / "main" / "appendonlydir").is_dir()
    with line(tmp_path, "again", "{url: embedded}") as (sup, out):
        client = redis.Redis.from_url(sup.urls["main"], socket_timeout=2)
        try:
            assert client.get(epoch_key("again")) == epoch
            assert client.xlen("pg:again:numbers:out") == 50  # the source's state said: done
            assert client.scard("pgtest:rec:seen") == 50
            wait_for(lambda: client.get("pgtest:numbers:done"), 15, "the source to start")
            assert client.xlen("pg:again:numbers:out") == 50  # nothing sent again
        finally:
            client.close()
    assert not lost_lines(out)


def test_a_durable_folder_emptied_between_runs_is_said_at_start(tmp_path: Path) -> None:
    data = tmp_path / "state" / "brokers" / "main"
    with EmbeddedBroker(data_dir=data):  # an AOF without the line's data: emptied since
        pass
    with line(tmp_path, "wiped", "{url: embedded}") as (sup, out):
        client = redis.Redis.from_url(sup.urls["main"], socket_timeout=2)
        try:
            (lost,) = lost_lines(out)
            assert "came back empty at start although its data folder had an AOF" in lost
            assert f"check its data folder {data}" in lost
            assert read_line_counters(client, "wiped") == {"broker_data_lost": 1}
        finally:
            client.close()


def test_a_damaged_aof_stops_the_start_with_the_servers_reason(tmp_path: Path) -> None:
    with EmbeddedBroker(data_dir=tmp_path / "state" / "brokers" / "main"):
        pass
    manifest = next((tmp_path / "state" / "brokers" / "main" / "appendonlydir").glob("*.manifest"))
    manifest.write_text("")
    shutil.copy(TESTS / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    (tmp_path / "graph.yaml").write_text(GRAPH.format(name="damaged", broker="{url: embedded}"))
    plan = load_graph(tmp_path / "graph.yaml")
    sup = Supervisor(plan, out=io.StringIO(), colour=False, state_dir=tmp_path / "state")
    with pytest.raises(BrokerError) as err:
        sup.start_brokers()
    print(err.value)
    assert re.search(r"valkey-server exited at start \(code 1\) on port \d+: FATAL AOF "
                     r"MANIFEST FILE ERROR; Found an empty AOF manifest \(log: .*broker.log\); "
                     r"repair the AOF in .*appendonlydir \(valkey-check-aof or "
                     r"redis-check-aof --fix", str(err.value))
    assert "\n" not in str(err.value) and "overcommit" not in str(err.value)
    sup.shutdown()
    # the folder is not left locked: the same line starts once the AOF is put right
    manifest.unlink()
    with line(tmp_path, "damaged", "{url: embedded}") as (sup, _out):
        assert sup.brokers["main"].proc is not None
