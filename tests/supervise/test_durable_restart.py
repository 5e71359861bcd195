"""An embedded broker killed with ``kill -9`` comes back with its data (AOF in the state folder).

Real processes: a supervisor thread, a valkey-server (or redis-server) the supervisor owns, agent
replicas. The broker is killed by its pid, as an operator's ``kill -9`` would.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import pytest
import redis

from pgtest_util import wait_for
from procgraph.constants import state_key
from procgraph.graph import load_graph
from procgraph.supervisor import Supervisor

TESTS = Path(__file__).parent.parent
COUNT = 300

GRAPH = """
name: {name}
brokers: {{main: {{url: embedded{extra}}}}}
agents:
  numbers: {{class: "pgtest_agents:Numbers", params: {{count: {count}}}}}
  rec:
    class: "pgtest_agents:Recorder"
    params: {{slow_ms: 10}}
    inputs: {{items: numbers.out}}
"""


@contextmanager
def line(tmp_path: Path, name: str, extra: str = "", kind: str = "valkey",
         state_dir: Path | None = None) -> Iterator[tuple[Supervisor, io.StringIO]]:
    """Run the numbers -> slow recorder line under a real supervisor thread."""
    shutil.copy(TESTS / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    graph = tmp_path / "graph.yaml"
    graph.write_text(GRAPH.format(name=name, extra=extra, count=COUNT))
    out = io.StringIO()
    sup = Supervisor(load_graph(graph), out=out, colour=False, broker_kind=kind,
                     state_dir=state_dir)
    sup.start_in_thread()
    try:
        yield sup, out
    finally:
        sup.shutdown()
        print(out.getvalue()[-3000:])


def kill_broker(sup: Supervisor, name: str = "main") -> int:
    """``kill -9`` the broker's server process; return the killed pid."""
    proc = sup.brokers[name].proc
    assert proc is not None
    pid = proc.pid
    os.kill(pid, signal.SIGKILL)
    return pid


def restarted(sup: Supervisor, old_pid: int, name: str = "main") -> bool:
    """True once the supervisor runs a new server process that answers PING."""
    proc = sup.brokers[name].proc
    if proc is None or proc.pid == old_pid or proc.poll() is not None:
        return False
    try:
        return bool(redis.Redis.from_url(sup.urls[name], socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def resume(pid: int) -> None:
    """SIGCONT a stopped replica (gone already: nothing to do)."""
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def snapshot(client: redis.Redis, graph: str) -> dict[str, object]:
    """What must survive: the backlog (ids still in the stream), the consumer group (where it
    is, what it has in hand) and the source's sequence state."""
    stream = f"pg:{graph}:numbers:out"
    groups = [(g["name"], g["last-delivered-id"], g["pending"])
              for g in client.xinfo_groups(stream)]
    return {"ids": [eid for eid, _ in client.xrange(stream)], "groups": groups,
            "next": client.hget(state_key(graph, "numbers", "values"), "next")}


@pytest.mark.parametrize("kind", ["valkey", "redis"])
def test_kill_9_of_the_embedded_broker_keeps_backlog_groups_and_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    if kind == "redis" and shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    # the default state folder, moved under tmp_path (the documented $XDG_STATE_HOME rule)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    with ExitStack() as stack, line(tmp_path, "durable", kind=kind) as (sup, out):
        client = redis.Redis.from_url(sup.urls["main"], socket_timeout=2)
        stack.callback(client.close)
        wait_for(lambda: client.get("pgtest:numbers:done"), 15, "the source to send everything")
        (rec,) = [r for r in sup.replicas if r.agent.name == "rec"]
        assert rec.proc is not None
        os.kill(rec.proc.pid, signal.SIGSTOP)  # hold the reader still: a backlog to compare
        stack.callback(resume, rec.proc.pid)
        before = snapshot(client, "durable")
        handled_before = int(client.get("pgtest:rec:handled") or 0)
        print(f"before the kill: {len(before['ids'])} entries in the stream, group "
              f"{before['groups']}, {handled_before} handled")
        assert len(before["ids"]) > 0 and handled_before < COUNT  # a backlog in the broker
        assert [g[0] for g in before["groups"]] == [b"rec"]
        assert before["next"] == str(COUNT).encode()
        pid = kill_broker(sup)
        wait_for(lambda: restarted(sup, pid), 10, "the supervisor to restart the broker")
        after = snapshot(client, "durable")
        print(f"after the restart: {len(after['ids'])} entries in the stream")
        assert after == before  # same entries, same group and pending, same sequence state
        resume(rec.proc.pid)
        # the line goes on from there: every item recorded, nothing sent again
        wait_for(lambda: client.scard("pgtest:rec:seen") == COUNT, 15, "every item recorded")
        last = client.xrevrange("pg:durable:numbers:out", count=1)
        assert last and last[0][0] == before["ids"][-1]  # type: ignore[index]
        assert "data lost" not in out.getvalue()
        assert "restarting on port" in out.getvalue()
        assert (tmp_path / "xdg" / "procgraph" / "durable" / "brokers" / "main").is_dir()
