"""A real line whose ``latest`` reader is slower than its producer says how much it dropped,
on Valkey and on Redis, in ``procgraph.health.edge_stats`` and in ``procgraph top``."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.health import edge_stats

SENT = 2000
LINE = f"""
name: drops
agents:
  numbers: {{class: pgtest_agents:Numbers, params: {{count: {SENT}, rate_hz: 0}}}}
  sink:
    class: pgtest_agents:Recorder
    inputs: {{items: {{from: numbers.out, policy: latest}}}}
    params: {{slow_ms: 20}}
"""


def test_a_slow_latest_reader_says_what_it_dropped(
        broker: EmbeddedBroker, run_graph: Callable[..., object], tmp_path: Path) -> None:
    client = redis.Redis.from_url(broker.url)
    stream = "pg:drops:numbers:out"
    with run_graph(LINE, redis_url=broker.url):  # type: ignore[attr-defined]
        wait_for(lambda: client.get("pgtest:numbers:done"), 30, "the source to finish")
        time.sleep(1.0)
        edge = edge_stats(client, [stream])[(stream, "sink")]
        out = subprocess.run([sys.executable, "-m", "procgraph", "top",
                              str(tmp_path / "graph.yaml"), "--redis", broker.url, "--once"],
                             capture_output=True, text=True, timeout=30).stdout
    print(edge, out)
    assert edge.read is not None and edge.dropped is not None and edge.unread is not None
    assert edge.read + edge.dropped + edge.unread == SENT
    assert edge.dropped > SENT // 4  # the reader got ~10%; the stream's cap holds ~50%
    row = next(ln for ln in out.splitlines() if "in:items" in ln).split()
    assert re.fullmatch(r"[\d,]+", row[-4]) and int(row[-4].replace(",", "")) > 0, out
