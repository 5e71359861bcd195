"""Broker ACLs (issue 9: who can write to the broker can inject messages; ACLs limit that).

A real valkey-server with two ACL users made here (the default user is kept for setup and
for reading the figures only):

- ``line``: what a supervised line needs, limited to its own graph's keys (``~pg:acl:*``),
  the model registry read-only and its event channel, plus ``~pgtest:*`` for the test
  agents' own keys. The Numbers -> Recorder line runs to the end, every item recorded once.
- ``viewer``: read-only. ``tap``, ``top --once`` and ``check`` work; XADD, XREADGROUP, XACK
  and writing scripts into a line stream fail with NOPERM.

A refusal by the ACL (NOPERM) stops ``procgraph run`` with one ``error:`` line.

The rules are the ones docs/ give (issue 9); keep them in step.
"""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pgtest_procs import env
from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.graph import load_graph
from procgraph.supervisor import Supervisor

TESTS = Path(__file__).resolve().parents[1]
COUNT = 200
LINE_PW = "acl-line-S3cret"
VIEW_PW = "acl-view-S3cret"
STREAM = "pg:acl:numbers:out"

#: what any line needs (its streams, state, heartbeats, lease, edges; Lua for counted acks and
#: dead letters; no admin, no FLUSHALL, no CLIENT KILL), the registry read-only for followers
LINE_RULES = ("+@connection +@transaction +@stream +@hash +@string +@set +@sortedset +@list "
              "+@keyspace +@pubsub +eval -@dangerous ~pg:acl:* %R~pg:model:* %R~pg:models "
              "&pg:model-events:*")
#: the smallest set found for this Numbers -> Recorder line (no state, no registry)
LINE_RULES_MIN = ("+@connection +@transaction +@stream +@hash +@string +@set +@keyspace +eval "
                  "-@dangerous ~pg:acl:*")
#: for the test agents' own keys (Recorder: SADD, INCR, HINCRBY)
TEST_KEYS = "~pgtest:*"
#: read everything of procgraph's, write nothing (EVAL too runs under the key rules: a script
#: can only read); XREADGROUP is not in @read, so the viewer cannot join a line's group
VIEW_RULES = "+@read +@connection +eval -@dangerous %R~pg:*"

GRAPH = """
name: acl
brokers:
  main:
    url: "redis://127.0.0.1:{port}"
    username: "${{PG_ACL_USER:-line}}"
    password: "${{PG_ACL_PASSWORD}}"
agents:
  numbers: {{class: "pgtest_agents:Numbers", params: {{count: {count}}}}}
  recorder: {{class: "pgtest_agents:Recorder", inputs: {{items: numbers.out}}}}
"""


def setuser(admin: redis.Redis, name: str, password: str, rules: str) -> None:
    """ACL SETUSER as redis-cli takes it (a quoted "(selector)" is one argument)."""
    admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}",
                          *shlex.split(rules))


@pytest.fixture
def acl_broker() -> Iterator[tuple[EmbeddedBroker, redis.Redis]]:
    with EmbeddedBroker() as broker:
        admin = redis.Redis(port=broker.port)
        yield broker, admin
        admin.close()


def _graph(folder: Path, port: int) -> Path:
    shutil.copy(TESTS / "pgtest_agents.py", folder / "pgtest_agents.py")
    graph = folder / "acl.yaml"
    graph.write_text(GRAPH.format(port=port, count=COUNT))
    return graph


def _procgraph(*args: str, user: str, password: str, port: int
               ) -> subprocess.CompletedProcess[str]:
    extra = {"PG_ACL_USER": user, "PG_ACL_PASSWORD": password, "COLUMNS": "200",
             "PROCGRAPH_REDIS": f"redis://{user}:{password}@127.0.0.1:{port}"}
    return subprocess.run([sys.executable, "-m", "procgraph", *args], capture_output=True,
                          text=True, env={**env(), **extra}, timeout=20)


def _refused(client: redis.Redis, *command: object) -> str:
    with pytest.raises(redis.exceptions.NoPermissionError) as caught:
        client.execute_command(*command)
    # redis-py maps the NOPERM reply to NoPermissionError (and drops the code from the text)
    assert "permissions" in str(caught.value), caught.value
    return str(caught.value)


def _denied(admin: redis.Redis, user: str) -> set[str]:
    return {e[b"object"].decode() for e in admin.execute_command("ACL", "LOG", "100")
            if e[b"username"].decode() == user}


@pytest.mark.parametrize("line_rules", [LINE_RULES, LINE_RULES_MIN], ids=["docs", "minimal"])
def test_acl_line_user_runs_the_line_viewer_watches_but_cannot_inject(
        acl_broker: tuple[EmbeddedBroker, redis.Redis], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, line_rules: str) -> None:
    """The line runs as ACL user `line` (credentials from ${VAR}s), all 200 items recorded
    exactly once; the only command refused to it is CONFIG GET (which it does without).
    `viewer` runs tap, top --once and check; its XADD into the line's stream is NOPERM."""
    broker, admin = acl_broker
    setuser(admin, "line", LINE_PW, f"{line_rules} {TEST_KEYS}")
    setuser(admin, "viewer", VIEW_PW, VIEW_RULES)
    admin.execute_command("ACL", "LOG", "RESET")
    graph = _graph(tmp_path, broker.port)
    monkeypatch.setenv("PG_ACL_PASSWORD", LINE_PW)
    monkeypatch.delenv("PG_ACL_USER", raising=False)
    plan = load_graph(graph)
    assert plan.brokers["main"].username == "line"
    log = io.StringIO()
    sup = Supervisor(plan, out=log, colour=False, state_dir=tmp_path / "state")
    started = time.monotonic()
    sup.start_in_thread()
    try:
        wait_for(lambda: int(admin.hget(f"{STREAM}:edges", "recorder:done") or 0) >= COUNT
                 and admin.get("pgtest:numbers:done"), 20, "the line to run as user `line`")
        # the replicas ran as `line`, not as the default user
        users = {c["user"] for c in admin.client_list() if c.get("user")}
        assert "line" in users, users

        # top reads the heartbeats, written once a second: the last counts may be a beat late
        deadline = time.monotonic() + 10
        while True:
            top = _procgraph("top", str(graph), "--once", user="viewer", password=VIEW_PW,
                             port=broker.port)
            assert top.returncode == 0, top.stdout + top.stderr
            if str(COUNT) in top.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "recorder" in top.stdout and str(COUNT) in top.stdout, top.stdout
        check = _procgraph("check", str(graph), user="viewer", password=VIEW_PW,
                           port=broker.port)
        assert check.returncode == 0 and "alive" in check.stdout, check.stdout + check.stderr
        tap = _procgraph("tap", STREAM, "--from-start", "--count", "5", user="viewer",
                         password=VIEW_PW, port=broker.port)
        assert tap.returncode == 0, tap.stdout + tap.stderr
        assert tap.stdout.count("Item key='k") == 5, tap.stdout
        for said in (top, check, tap):
            assert VIEW_PW not in said.stdout + said.stderr
    finally:
        sup.shutdown()
        print(log.getvalue()[-3000:])
    assert time.monotonic() - started < 40

    # every item recorded exactly once, acked (Lua xack_counted ran under the ACL), none dead
    assert admin.scard("pgtest:recorder:seen") == COUNT
    assert int(admin.get("pgtest:recorder:handled")) == COUNT
    assert sum(int(v) for v in admin.hgetall("pgtest:recorder:by").values()) == COUNT
    assert int(admin.hget(f"{STREAM}:edges", "recorder:done")) == COUNT
    assert admin.xpending(STREAM, "recorder")["pending"] == 0
    assert admin.xinfo_stream(STREAM)["entries-added"] == COUNT
    assert not admin.exists(f"{STREAM}:dead")
    # CONFIG GET proto-max-bulk-len is refused and the writer keeps the default limit
    assert _denied(admin, "line") <= {"config|get"}, _denied(admin, "line")
    # top's probe stream (edges.reads_as_position) is refused; it then asks HELLO instead
    assert _denied(admin, "viewer") <= {"xgroup|create", "del"}, _denied(admin, "viewer")

    line = redis.Redis(port=broker.port, username="line", password=LINE_PW)
    viewer = redis.Redis(port=broker.port, username="viewer", password=VIEW_PW)
    try:
        # the line user stays inside its own graph and cannot harm the server
        _refused(line, "XADD", "pg:other:numbers:out", "*", "h", "{}")
        _refused(line, "SET", "somebody:else", "1")
        _refused(line, "FLUSHALL")
        _refused(line, "CLIENT", "LIST")
        _refused(line, "CONFIG", "SET", "maxmemory", "1")
        _refused(line, "EVAL", "return redis.call('SET', KEYS[1], 1)", 1, "somebody:else")
        if line_rules == LINE_RULES:  # the registry: followers read, only the operator writes
            line.hgetall("pg:model:parts-front")
            follow = line.pubsub()
            follow.subscribe("pg:model-events:parts-front")
            assert follow.get_message(timeout=2)["type"] == "subscribe"
            follow.close()
            _refused(line, "HSET", "pg:model:parts-front", "current", "evil")
        # the viewer reads, never writes a line stream, never joins or acks a group
        assert viewer.xinfo_stream(STREAM)["entries-added"] == COUNT
        _refused(viewer, "XADD", STREAM, "*", "h", "{}")
        _refused(viewer, "EVAL", "return redis.call('XADD', KEYS[1], '*', 'h', '{}')", 1,
                 STREAM)
        _refused(viewer, "XREADGROUP", "GROUP", "recorder", "thief", "COUNT", 1, "STREAMS",
                 STREAM, ">")
        _refused(viewer, "EVAL", "return redis.call('XREADGROUP', 'GROUP', 'recorder', 'thief',"
                 " 'STREAMS', KEYS[1], '>')", 1, STREAM)
        _refused(viewer, "XGROUP", "CREATE", STREAM, "thieves", "0")
        _refused(viewer, "XACK", STREAM, "recorder", "0-1")
        _refused(viewer, "DEL", STREAM)
        _refused(viewer, "PUBLISH", "pg:model-events:parts-front", "{}")
    finally:
        line.close()
        viewer.close()
    assert admin.xinfo_stream(STREAM)["entries-added"] == COUNT  # nothing injected


def test_acl_refusal_stops_run_with_one_error_line(
        acl_broker: tuple[EmbeddedBroker, redis.Redis], tmp_path: Path) -> None:
    """A line user whose ACL lacks EVAL (counted acks are Lua): `procgraph run` exits 1 at
    once with one `error:` line naming the refused command and the fix, no traceback, no
    retrying (NOPERM is not an outage)."""
    broker, admin = acl_broker
    setuser(admin, "line", LINE_PW, LINE_RULES_MIN.replace("+eval ", "") + f" {TEST_KEYS}")
    graph = _graph(tmp_path, broker.port)
    started = time.monotonic()
    run = _procgraph("run", str(graph), "--duration", "15", user="line", password=LINE_PW,
                     port=broker.port)
    took = time.monotonic() - started
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr, run.stderr[-2000:]
    assert len(errors) == 1, run.stderr
    assert "not allowed by the broker's ACL" in errors[0] and "eval" in errors[0], errors
    assert "fix: grant the user" in errors[0] and LINE_PW not in run.stdout + run.stderr
    assert took < 10, f"run took {took:.1f}s: the refusal was retried"
