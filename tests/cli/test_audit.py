"""``procgraph audit`` on a real line (Numbers -> Recorder): every entry accounted for, dead
letters and ``latest`` drops explained, and a forged loss (an entry deleted unread, an entry
acknowledged behind the runtime's count) failing with exit 1 and the edge (and id) named."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner, Result

from pgtest_util import wait_for
from procgraph.audit import audit_edge
from procgraph.brokers import EmbeddedBroker
from procgraph.cli.main import app
from procgraph.constants import dead_letter_key
from procgraph.delivery import deadletter
from procgraph.durability import DATA_LOST_COUNTER
from procgraph.edges import create_group_counted, xack_counted
from procgraph.health import add_line_counter
from procgraph.transport.reader import GroupReader, ReadSpec

SENT, FAST = 60, 300
LINE = f"""
name: audited
agents:
  numbers: {{class: pgtest_agents:Numbers, params: {{count: {SENT}}}}}
  rec:
    class: pgtest_agents:Recorder
    inputs: {{items: {{from: numbers.out}}}}
    params: {{poison: [k3, k7]}}
  burst:
    class: pgtest_agents:Numbers
    params: {{count: {FAST}}}
    outputs: {{out: {{maxlen: 20}}}}
  slow:
    class: pgtest_agents:Recorder
    inputs: {{items: {{from: burst.out, policy: latest}}}}
    params: {{slow_ms: 20}}
"""
EDGE = "pg:audited:numbers:out -> rec"
STREAM = "pg:audited:numbers:out"


def _audit(graph: Path, url: str, *extra: str) -> Result:
    """``procgraph audit`` in this process (the real command is run once, on the line)."""
    return CliRunner().invoke(app, ["audit", str(graph), "--redis", url, *extra])


def _edges(out: str) -> dict[str, dict[str, Any]]:
    return {f"{e['stream']} -> {e['group']}": e for e in json.loads(out)["edges"]}


def test_audit_accounts_for_a_real_line_and_fails_on_a_forged_loss(
        broker: EmbeddedBroker, run_graph: Callable[..., object], tmp_path: Path) -> None:
    client = redis.Redis.from_url(broker.url)
    graph = tmp_path / "graph.yaml"
    with run_graph(LINE, redis_url=broker.url):  # type: ignore[attr-defined]
        wait_for(lambda: client.get("pgtest:numbers:done") and client.get("pgtest:burst:done"),
                 30, "the sources to finish")
        wait_for(lambda: int(client.get("pgtest:rec:handled") or 0) == SENT - 2, 20,
                 "rec to handle every good item")
        running = subprocess.run(  # the real command, on the running line
            [sys.executable, "-m", "procgraph", "audit", str(graph), "--redis", broker.url],
            capture_output=True, text=True, timeout=30)
    print(running.stdout, running.stderr)
    assert running.returncode == 0, running.stderr
    assert "every entry accounted for" in running.stdout
    stopped = _audit(graph, broker.url)  # the line is stopped, its broker still up
    print(stopped.stdout)
    assert stopped.exit_code == 0 and "every entry accounted for" in stopped.stdout
    edges = _edges(_audit(graph, broker.url, "--json").stdout)
    rec, slow = edges[EDGE], edges["pg:audited:burst:out -> slow"]
    assert (rec["produced"], rec["acked"], rec["dead"], rec["unexplained"]) == (SENT, SENT - 2,
                                                                                2, 0)
    assert rec["pending"] == rec["unread"] == rec["dropped"] == 0
    assert slow["dropped"] > 0 and slow["unexplained"] == 0
    assert slow["produced"] == (slow["acked"] + slow["dead"] + slow["pending"]
                                + slow["unread"] + slow["dropped"]) == FAST

    # forged: an entry added and deleted before the agent read it (the line is stopped)
    added = client.xadd(STREAM, {"h": b"{}"})
    forged = added.decode() if isinstance(added, bytes) else str(added)
    client.xdel(STREAM, forged)
    bad = _audit(graph, broker.url)
    print(bad.stdout)
    assert bad.exit_code == 1
    assert f"UNEXPLAINED entries on {EDGE}" in bad.stdout and forged in bad.stdout
    row = _edges(_audit(graph, broker.url, "--json").stdout)[EDGE]
    assert row["unexplained"] == 1 and row["entry_ids"] == [forged]

    # a broker that lost its data (procgraph.durability counts it): shown on every edge
    add_line_counter(client, "audited", DATA_LOST_COUNTER)
    row = _edges(_audit(graph, broker.url, "--json").stdout)[EDGE]
    assert row["broker_data_lost"] == 1 and any("lost its data 1 time" in n
                                                for n in row["notes"])


def test_an_ack_behind_the_count_and_trimmed_dead_letters(valkey: EmbeddedBroker) -> None:
    client = redis.Redis.from_url(valkey.url)
    stream, group = "pg:forge:a:out", "b"
    create_group_counted(client, stream, group)
    ids = [bytes(client.xadd(stream, {"h": b"{}"})) for _ in range(5)]  # type: ignore[arg-type]
    client.xreadgroup(group, "b-0", {stream: ">"}, count=3)
    xack_counted(client, stream, group, ids[:1])
    row = audit_edge(client, stream, group, "lossless")
    assert (row.produced, row.acked, row.pending, row.unread, row.unexplained) == (5, 1, 2, 2, 0)
    client.xack(stream, group, ids[1])  # behind the runtime's back: no count
    row = audit_edge(client, stream, group, "lossless")
    assert (row.pending, row.unexplained, row.entry_ids) == (1, 1, [])
    assert any("no id left" in n for n in row.notes)
    # dead letters: two records, one trimmed by the cap; this agent is the only reader
    dead = dead_letter_key(stream)
    for _ in range(2):
        client.xadd(dead, {"dead:agent": "b-0", "dead:stream": stream, "dead:source_id": "x"})
    client.xtrim(dead, maxlen=1, approximate=False)
    xack_counted(client, stream, group, ids[2:3])
    row = audit_edge(client, stream, group, "lossless")
    assert (row.dead, row.dead_trimmed, row.acked) == (2, 1, 0)
    assert any("trimmed" in n for n in row.notes)
    client.hset(f"{stream}:edges", f"{group}:dead", 2)  # a dead-letter count, where kept
    assert audit_edge(client, stream, group, "lossless").dead == 2
    # the group deleted, then the stream: both fail, counters left say they existed
    client.xgroup_destroy(stream, group)
    row = audit_edge(client, stream, group, "lossless")
    assert (row.gone, row.ok) == ("group", False)
    client.delete(stream)
    row = audit_edge(client, stream, group, "lossless")
    assert (row.gone, row.ok) == ("stream", False)
    fresh = audit_edge(client, "pg:forge:none:out", group, "lossless")
    assert fresh.ok and not fresh.exists


def test_exact_dead_count_per_group_with_several_readers_and_a_trimmed_dead_stream(
        valkey: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two groups dead-letter into one capped dead stream: each group's ``<group>:dead``
    (kept by the dead-letter script) stays exact after the cap trimmed most records, and a
    dead letter retried (its reply lost) is neither recorded nor counted twice."""
    monkeypatch.setattr(deadletter, "DEAD_LETTER_MAXLEN", 2)
    client = redis.Redis.from_url(valkey.url)
    stream = "pg:multi:a:out"
    readers = {g: GroupReader(client, [ReadSpec(stream, g, "items", "0")], f"{g}-0",
                              threading.Event()) for g in ("b", "c")}
    for reader in readers.values():
        reader.ensure_groups()
    for i in range(10):
        client.xadd(stream, {"h": b"{}", "i": str(i).encode()})
    dead_of = {"b": 3, "c": 5}  # b dead-letters its first 3 entries, c its first 5
    for group, reader in readers.items():
        got = reader.read(10, 100)
        for _, entry in got[:dead_of[group]]:
            deadletter.dead_letter(reader, stream, entry, "test", f"{group}-0")
        deadletter.dead_letter(reader, stream, got[0][1], "retried", f"{group}-0")  # no-op
        xack_counted(client, stream, group, [e[0] for _, e in got[dead_of[group]:]])
    assert client.xlen(dead_letter_key(stream)) == 2  # 8 records, the cap kept 2
    for group, n in dead_of.items():
        row = audit_edge(client, stream, group, "lossless")
        print(row)
        assert (row.produced, row.dead, row.acked, row.pending, row.unexplained) == (
            10, n, 10 - n, 0, 0), group
        assert row.dead_trimmed == 6 and row.ok
        assert any("exact count" in note for note in row.notes)


def test_a_stopped_line_with_an_embedded_broker_is_audited_from_its_data(
        tmp_path: Path) -> None:
    """Issue 10 item 5: `audit` of a stopped line opens its durable embedded broker from the
    state folder, audits it, stops it; a line without data or still running is refused."""
    import shutil

    from pgtest_procs import Run
    from procgraph.graph import load_graph
    from procgraph.lease import Holder, LocalLock

    shutil.copy(Path(__file__).parents[1] / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    graph = tmp_path / "graph.yaml"
    graph.write_text(LINE)
    state = tmp_path / "state"
    run = Run(graph, "--duration", "12", state_dir=state)
    assert run.finish(60) == 0, run.output
    done = subprocess.run([sys.executable, "-m", "procgraph", "audit", str(graph),
                           "--state-dir", str(state), "--json"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is not running: broker 'main' opened from" in done.stderr
    rec = _edges(done.stdout)[EDGE]
    assert (rec["produced"], rec["acked"], rec["dead"], rec["unexplained"]) == (SENT, SENT - 2,
                                                                                2, 0)
    # the opened broker was stopped again: a second audit opens it anew
    again = _audit_local(graph, state)
    assert again.exit_code == 0 and "every entry accounted for" in again.stdout, again.output
    # while the line's lock is held (a run of it), the data is not opened
    plan = load_graph(graph)
    lock = LocalLock(state, plan.name, Holder.me(str(graph)))
    lock.acquire()
    try:
        held = _audit_local(graph, state)
    finally:
        lock.release()
    assert held.exit_code == 1 and "already running" in held.output, held.output
    # a line that never ran here: says so
    never = _audit_local(graph, tmp_path / "elsewhere")
    assert never.exit_code == 1 and "has no data in" in never.output, never.output
    assert "Traceback" not in never.output


def _audit_local(graph: Path, state: Path) -> Result:
    return CliRunner().invoke(app, ["audit", str(graph), "--state-dir", str(state)])
