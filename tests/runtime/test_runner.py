"""procgraph.runtime.runner in-process on a real broker: the lifecycle (teardown after a failed
setup), the key/trace rule through the real consume loop, and the narrow agent interface."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import redis

from pgtest_util import wait_for
from procgraph import codec
from procgraph.graph import load_graph
from procgraph.message import Hop
from procgraph.runtime import AgentRunner, run_replica

AGENTS = '''
from procgraph import Agent, Input, Output
from pgtest_agents import Item


class Fragile(Agent):
    items = Input(Item)

    def setup(self):
        self.context.redis().rpush("rt:events", "setup")
        raise RuntimeError("no camera")

    def on_items(self, msg):
        pass

    def teardown(self):
        self.context.redis().rpush("rt:events", "teardown")
        self.state.put("torn_down", True)


class Classify(Agent):
    items = Input(Item, batch=4, max_wait_ms=20)
    out = Output(Item)

    def on_items(self, msgs):
        for m in msgs:
            self.out.send(Item(n=m.n * 10, key=m.key))
        self.out.send(Item(n=-1))  # keyless: matches no input of a batch of several


class Ticky(Agent):
    items = Input(Item)

    def on_items(self, msg):
        pass

    def tick(self):
        self.state.put("ticks", self.state.get("ticks", 0) + 1)
'''


def _graph(tmp_path: Path, body: str) -> Path:
    tests = Path(__file__).parents[1]
    shutil.copy(tests / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    (tmp_path / "rt_agents.py").write_text(AGENTS)
    graph = tmp_path / "rt.yaml"
    graph.write_text(body)
    return graph


SRC = '  src: {class: "pgtest_agents:Numbers", params: {count: 0}}\n'


def test_teardown_runs_after_a_failed_setup(broker, tmp_path: Path) -> None:
    graph = _graph(tmp_path, "name: rt\nbrokers: {main: {url: embedded}}\nagents:\n" + SRC +
                   '  fragile: {class: "rt_agents:Fragile", inputs: {items: src.out}}\n')
    client = redis.Redis.from_url(broker.url)
    runner = AgentRunner(load_graph(graph), "fragile", 0, {"main": broker.url})
    with pytest.raises(RuntimeError, match="no camera"):
        runner.run()
    assert client.lrange("rt:events", 0, -1) == [b"setup", b"teardown"]
    # the teardown's state was written, and the heartbeat is gone at once
    assert client.hget("pg:rt:state:fragile:values", "torn_down") == b"true"
    assert not client.exists("pg:rt:hb:fragile:0")


def test_batch_outputs_follow_the_key_and_trace_rule(broker, tmp_path: Path) -> None:
    graph = _graph(tmp_path, "name: rt\nbrokers: {main: {url: embedded}}\nagents:\n" + SRC +
                   '  clf: {class: "rt_agents:Classify", '
                   'inputs: {items: {from: src.out, start: "0"}}}\n')
    client = redis.Redis.from_url(broker.url)
    from pgtest_agents import Item

    for n in range(4):
        hop = Hop(agent="src", in_ns=n, out_ns=n + 1)
        client.xadd("pg:rt:src:out", codec.encode(Item(n=n, key=f"k{n}", trace=[hop])))
    runner = AgentRunner(load_graph(graph), "clf", 0, {"main": broker.url})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: client.xlen("pg:rt:clf:out") == 5, 20, "4 verdicts and a summary")
    finally:
        runner.stop_event.set()
        thread.join(10)
    out = [codec.decode(f, Item) for _, f in client.xrange("pg:rt:clf:out")]
    keyed = {m.key: m for m in out if m.key}
    assert sorted(keyed) == ["k0", "k1", "k2", "k3"]
    for key, m in keyed.items():
        n = int(key[1:])
        assert m.n == n * 10
        assert [(h.agent, h.in_ns) for h in m.trace[:1]] == [("src", n)]  # its own input's
        assert [h.agent for h in m.trace] == ["src", "clf"]
    (summary,) = [m for m in out if not m.key]
    assert [h.agent for h in summary.trace] == ["clf"]  # matched no input: a new trace


def test_the_runner_talks_to_the_binding_only(broker, tmp_path: Path) -> None:
    graph = _graph(tmp_path, "name: rt\nbrokers: {main: {url: embedded}}\nagents:\n" + SRC)
    runner = AgentRunner(load_graph(graph), "src", 0, {"main": broker.url})
    assert runner.stop_event is runner.agent.binding.stop_event
    assert set(vars(runner.agent)) == {"params", "context", "log", "binding"}
    assert runner.agent.state is runner.state
    assert callable(run_replica)


def test_state_written_in_tick_is_flushed_by_the_runtime(broker, tmp_path: Path) -> None:
    graph = _graph(tmp_path, "name: rt\nbrokers: {main: {url: embedded}}\nagents:\n" + SRC +
                   '  ticky: {class: "rt_agents:Ticky", inputs: {items: src.out}}\n')
    client = redis.Redis.from_url(broker.url)
    runner = AgentRunner(load_graph(graph), "ticky", 0, {"main": broker.url})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: int(client.hget("pg:rt:state:ticky:values", "ticks") or 0) >= 2, 20,
                 "tick() state in the broker")
    finally:
        runner.stop_event.set()
        thread.join(10)
