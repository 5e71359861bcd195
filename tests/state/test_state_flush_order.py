"""When the runtime writes agent state, watched with MONITOR on a real broker (Valkey, Redis):
a handler's state change reaches the broker after its outputs and before its input's ack;
a source's after the messages it sent before ``flush()``/``sleep()``; a teardown's at the end."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from pgtest_util import wait_for
from procgraph.graph import load_graph
from procgraph.runtime import AgentRunner

AGENTS = '''
from procgraph import Agent, Input, Output
from pgtest_agents import Item


class Tally(Agent):
    items = Input(Item)
    out = Output(Item)

    def on_items(self, msg):
        self.out.send(Item(n=msg.n))
        self.state.put("last", msg.n)

    def teardown(self):
        self.state.put("bye", True)


class Pacer(Agent):
    out = Output(Item)

    def run(self):
        for n in range(3):
            self.out.send(Item(n=n))
            self.state.put("sent", n + 1)
            self.sleep(0.01)
        while self.sleep(0.05):
            pass
'''


@contextmanager
def monitor(url: str) -> Iterator[list[str]]:
    """Every command the broker runs meanwhile, as MONITOR shows it."""
    seen: list[str] = []
    done = threading.Event()
    mon = redis.Redis.from_url(url).monitor()

    def watch() -> None:
        with mon as m:
            while not done.is_set():
                seen.append(m.next_command()["command"])

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    wait_for(lambda: redis.Redis.from_url(url).ping() and seen, 5, "MONITOR to start")
    try:
        yield seen
    finally:
        done.set()
        redis.Redis.from_url(url).ping()  # wakes the watcher up
        thread.join(5)


@contextmanager
def running(runner: AgentRunner) -> Iterator[None]:
    """The runner in a thread until the block ends (then stopped, as by SIGTERM)."""
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        runner.stop_event.set()
        thread.join(10)
    assert not thread.is_alive()


def _runner(tmp_path: Path, url: str, agent: str) -> AgentRunner:
    tests = Path(__file__).parents[1]
    shutil.copy(tests / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    (tmp_path / "order_agents.py").write_text(AGENTS)
    graph = tmp_path / "order.yaml"
    graph.write_text("""
name: order
brokers: {main: {url: embedded}}
agents:
  pace: {class: "order_agents:Pacer"}
  tally: {class: "order_agents:Tally", inputs: {items: {from: pace.out, start: "0"}}}
""")
    return AgentRunner(load_graph(graph), agent, 0, {"main": url})


def _index(commands: list[str], *needles: str, start: int = 0) -> int:
    for i in range(start, len(commands)):
        if all(n in commands[i] for n in needles):
            return i
    raise AssertionError(f"no command with {needles} after #{start}:\n" + "\n".join(commands))


def test_handler_state_after_outputs_before_ack(broker, tmp_path: Path) -> None:
    client = redis.Redis.from_url(broker.url)
    entry = client.xadd("pg:order:pace:out", {b"h": b'{"v":1,"type":"Item","data":{"n":7}}'})
    runner = _runner(tmp_path, broker.url, "tally")
    def handled_and_acked() -> bool:
        groups = client.xinfo_groups("pg:order:pace:out")
        return bool(groups) and groups[0]["pending"] == 0 and groups[0]["entries-read"] == 1

    with monitor(broker.url) as commands, running(runner):
        wait_for(handled_and_acked, 20, "the entry handled and acked")
    assert client.hget("pg:order:state:tally:values", "last") == b"7"
    xadd = _index(commands, "XADD", "pg:order:tally:out")
    state = _index(commands, "HSET", "pg:order:state:tally:values", "last")
    ack = _index(commands, "XACK", "pg:order:pace:out", entry.decode())
    assert xadd < state < ack
    assert "MULTI" in commands[xadd:state]  # one transaction per flush
    bye = _index(commands, "HSET", "pg:order:state:tally:values", "bye")
    assert bye > ack  # the teardown's state is written at the end, too


def test_source_state_after_its_messages(broker, tmp_path: Path) -> None:
    client = redis.Redis.from_url(broker.url)
    runner = _runner(tmp_path, broker.url, "pace")
    with monitor(broker.url) as commands, running(runner):
        wait_for(lambda: client.hget("pg:order:state:pace:values", "sent") == b"3", 20,
                 "the source to record 3 sends")
    xadds = [i for i, c in enumerate(commands) if "XADD" in c and "pg:order:pace:out" in c]
    assert len(xadds) == 3
    for n, xadd in enumerate(xadds, start=1):
        state = _index(commands, "HSET", "pg:order:state:pace:values", f"sent {n}")
        assert xadd < state, (n, commands)
