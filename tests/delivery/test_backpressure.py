"""procgraph.delivery.backpressure on a real broker: lossless edges trim nothing unread, and
their readers' groups exist before the producer's first entry."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import redis

from pgtest_agents import keys as _keys
from pgtest_agents import seen as _seen
from pgtest_util import wait_for


def test_reader_started_after_its_producer_misses_nothing(valkey, tmp_path):
    """Without a supervisor (containers, Kubernetes) a producer may start first: it creates
    its lossless readers' groups before its first entry."""
    import shutil
    import subprocess
    import sys

    client = redis.Redis.from_url(valkey.url)
    shutil.copy(Path(__file__).parents[1] / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    graph = tmp_path / "late.yaml"
    graph.write_text("""
name: late
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 50}}
  sink: {class: "pgtest_agents:Recorder", inputs: {items: src.out}}
""")

    def start(agent: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "procgraph", "agent", str(graph), agent,
                                 "0", "--broker", f"main={valkey.url}"])

    src = start("src")
    try:
        wait_for(lambda: client.get("pgtest:src:done"), 30, "the producer to finish")
        sink = start("sink")
        try:
            wait_for(lambda: _seen(client, "sink") == _keys(50), 30, "all 50 items")
        finally:
            sink.terminate()
            assert sink.wait(15) == 0
    finally:
        src.terminate()
        src.wait(15)


def test_backpressure_on_lossless_edge_trims_nothing_unread(broker, run_graph):
    client = redis.Redis.from_url(broker.url)
    graph = """
name: bp
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 1500, payload_bytes: 100},
        outputs: {out: {maxlen: 100}}}
  slow: {class: "pgtest_agents:Recorder", inputs: {items: src.out}, params: {slow_ms: 2}}
  preview: {class: "pgtest_agents:Recorder", params: {slow_ms: 20},
            inputs: {items: {from: src.out, policy: latest}}}
"""
    lengths: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            lengths.append(int(client.xlen("pg:bp:src:out")))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    with run_graph(graph, redis_url=broker.url):
        watcher.start()
        try:
            wait_for(lambda: _seen(client, "slow") == _keys(1500), 60, "lossless reader: all")
        finally:
            stop.set()
            watcher.join()
    # the producer was held back: the stream never grew far past its cap
    assert max(lengths) <= 100 + 110, max(lengths)
    # the latest-policy preview reader was allowed to miss entries and did
    assert len(_seen(client, "preview")) < 1500
