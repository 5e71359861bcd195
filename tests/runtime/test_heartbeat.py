"""procgraph.runtime.heartbeat: live replicas publish heartbeats that `procgraph check` reads."""

from __future__ import annotations

import redis

from pgtest_util import wait_for


def test_check_command_reports_heartbeats(valkey, run_graph):
    import subprocess
    import sys

    graph = """
name: chk
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 5}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out}, replicas: 2}
"""

    def check(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "procgraph", "check", str(graph_file),
                               "--redis", valkey.url, *args], capture_output=True, text=True)

    with run_graph(graph, redis_url=valkey.url) as sup:
        graph_file = sup.plan.file
        client = redis.Redis.from_url(valkey.url)
        wait_for(lambda: len(client.keys("pg:chk:hb:*")) == 3, 30, "three heartbeats")
        ok = check()
        assert ok.returncode == 0 and "3 replica(s) alive" in ok.stdout, ok.stdout
        assert check("--agent", "sink", "--replica", "1").returncode == 0
        assert check("--agent", "nope").returncode == 1
    # everything stopped: the heartbeats expire, the check fails
    wait_for(lambda: not client.keys("pg:chk:hb:*"), 15, "heartbeats to expire")
    down = check("--agent", "sink")
    assert down.returncode == 1 and "sink[0]" in down.stdout and "sink[1]" in down.stdout
