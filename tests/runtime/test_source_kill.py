"""A source that records what it sent in its state, killed with SIGKILL at random moments
while it sends flat out: every item reaches the sink exactly once.

A real broker, the source as its own ``procgraph agent`` process (``Numbers``: send, put the
next number, flush), killed and started again; then the sink reads the whole stream. Counted
at the sink: lost, duplicated.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from pgtest_agents import keys, seen
from pgtest_util import wait_for

COUNT = 3000
KILLS = 12
GRAPH = f"""
name: srckill
brokers: {{main: {{url: embedded}}}}
agents:
  src: {{class: "pgtest_agents:Numbers", params: {{count: {COUNT}}},
        outputs: {{out: {{maxlen: 100000}}}}}}
  sink: {{class: "pgtest_agents:Recorder", inputs: {{items: src.out}}}}
"""

pytestmark = pytest.mark.timeout(240)


def _start(graph: Path, agent: str, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "procgraph", "agent", str(graph), agent, "0",
                             "--broker", f"main={url}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _sent(client: redis.Redis) -> int:
    raw = client.hget("pg:srckill:state:src:values", "next")
    return int(raw) if raw is not None else 0


def test_a_stateful_source_killed_mid_send_sends_each_item_once(valkey, tmp_path):
    client = redis.Redis.from_url(valkey.url)
    shutil.copy(Path(__file__).parents[1] / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    graph = tmp_path / "srckill.yaml"
    graph.write_text(GRAPH)
    rng = random.Random(12)
    kills = 0
    src = _start(graph, "src", valkey.url)
    try:
        while kills < KILLS and not client.get("pgtest:src:done"):
            before = _sent(client)
            wait_for(lambda b=before: _sent(client) >= b + 50 or client.get("pgtest:src:done"),
                     60, "the source to send")
            time.sleep(rng.uniform(0.0, 0.05))
            src.kill()
            src.wait(10)
            kills += 1
            src = _start(graph, "src", valkey.url)
        wait_for(lambda: client.get("pgtest:src:done"), 120, "the source to finish")
    finally:
        src.kill()
        src.wait(10)
    sink = _start(graph, "sink", valkey.url)
    try:
        wait_for(lambda: int(client.get("pgtest:sink:handled") or 0) >= COUNT
                 and seen(client, "sink") == keys(COUNT), 120, "every item at the sink")
        time.sleep(0.5)  # a duplicate, if any, is handled now
        handled = int(client.get("pgtest:sink:handled") or 0)
    finally:
        sink.terminate()
        sink.wait(15)
    got = seen(client, "sink")
    lost, dup = COUNT - len(got & keys(COUNT)), handled - len(got)
    print(f"SOURCE KILL: items={COUNT} kills={kills} entries={client.xlen('pg:srckill:src:out')}"
          f" lost={lost} duplicated={dup}")
    assert kills >= KILLS // 2, "the source finished before it was killed enough times"
    assert (lost, dup) == (0, 0)
    assert client.xlen("pg:srckill:src:out") == COUNT
