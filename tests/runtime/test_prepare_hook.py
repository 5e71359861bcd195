"""``prepare_<port>`` hooks in the real consume loop, on a real broker: the handler gets what
the hook made, a backlog is prepared on the read-ahead thread (so that work overlaps the
handler's), a message the hook rejects is dead-lettered at once with the hook's reason while
the rest are handled exactly once, and keys and traces still follow the messages."""

from __future__ import annotations

import shutil
import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import redis

from pgtest_util import hosted_replica, sink_graph, wait_for
from procgraph import codec
from procgraph.runtime import AgentRunner
from procgraph.runtime.consume import READ_COUNT
from procgraph.testing import AgentHarness

AGENTS = '''
import threading
import time

import redis

from procgraph import Agent, Input, Output
from pgtest_agents import Item


class Doubles(Agent):
    """prepare_items doubles n (and refuses n == 13); the handler forwards the doubles and
    records on which thread each one was prepared."""

    items = Input(Item)
    out = Output(Item)

    def prepare_items(self, m):
        if m.n == 13:
            raise ValueError("thirteen is not allowed")
        return (m.n * 2, threading.current_thread().name)

    def on_items(self, prepared):
        doubled, thread = prepared
        self.context.redis().rpush("prep:threads", thread)
        self.out.send(Item(n=doubled))  # no key: it inherits the message's


class SlowPrepare(Agent):
    """A prepare hook that takes 20 ms a message (e.g. a big frame to resize)."""

    items = Input(Item)
    out = Output(Item)

    def prepare_items(self, m):
        time.sleep(0.02)
        return m.n

    def on_items(self, n):
        self.out.send(Item(n=n))


class SlowBatches(Agent):
    """100 ms a prepare, batches of 8; counts prepare calls made after teardown."""

    items = Input(Item, batch=8, max_wait_ms=50)
    out = Output(Item)
    after_teardown = []

    def setup(self):
        self.down = False

    def prepare_items(self, m):
        time.sleep(0.1)
        if self.down:
            SlowBatches.after_teardown.append(m.n)
        return m.n

    def on_items(self, ns):
        for n in ns:
            self.out.send(Item(n=n))

    def teardown(self):
        self.down = True


class Flaky(Agent):
    """prepare_items finds the broker away twice for n == 5 (read by the handler's thread)
    and n == 69 (in the chunk read ahead), then it is back."""

    items = Input(Item)
    out = Output(Item)
    failures = {5: 2, 69: 2}

    def prepare_items(self, m):
        if Flaky.failures.get(m.n, 0) > 0:
            Flaky.failures[m.n] -= 1
            raise redis.ConnectionError("connection refused (test)")
        return m.n

    def on_items(self, n):
        self.out.send(Item(n=n))


class BatchDoubles(Doubles):
    """The same hook, batched: the handler gets a list of what it made."""

    items = Input(Item, batch=8, max_wait_ms=50)

    def on_items(self, prepared):
        for doubled, thread in prepared:
            self.context.redis().rpush("prep:threads", thread)
            self.out.send(Item(n=doubled, key=f"k{doubled // 2}"))
'''

STREAM = "pg:prep:src:out"


def _graph(tmp_path: Path, agent: str) -> Path:
    return sink_graph(tmp_path, "prep", AGENTS, agent)


def _running(graph: Path, url: str) -> AbstractContextManager[AgentRunner]:
    return hosted_replica(graph, "sink", url)


def _send(client: redis.Redis, numbers: range) -> None:
    from pgtest_agents import Item

    for n in numbers:
        client.xadd(STREAM, codec.encode(Item(n=n, key=f"k{n}")))


def _out(client: redis.Redis) -> list[tuple[str, int, list[str]]]:
    from pgtest_agents import Item

    got = [codec.decode(f, Item) for _, f in client.xrange("pg:prep:sink:out")]
    return [(m.key, m.n, [h.agent for h in m.trace]) for m in got]


@pytest.mark.parametrize("agent", ["Doubles", "BatchDoubles"])
def test_a_backlog_is_prepared_ahead_and_a_refused_message_is_dead_lettered(
        valkey, tmp_path: Path, agent: str) -> None:
    client = redis.Redis.from_url(valkey.url)
    total = 3 * READ_COUNT  # waiting before the agent starts: full chunks, read ahead
    _send(client, range(total))
    with _running(_graph(tmp_path, agent), valkey.url) as runner:
        wait_for(lambda: len(_out(client)) == total - 1, 30, "every other entry handled")
        wait_for(lambda: client.xpending(STREAM, "sink")["pending"] == 0, 20, "all acked")
        assert runner.stats_in["items"].dead == 1
    out = _out(client)
    want = [n for n in range(total) if n != 13]
    assert [n // 2 for _, n, _ in out] == want  # each once, in order: none lost or doubled
    assert [key for key, _, _ in out] == [f"k{n}" for n in want]  # keys follow the messages
    assert all(trace == ["sink"] for _, _, trace in out)
    dead = client.xrange(STREAM + ":dead")
    assert len(dead) == 1
    reason = dead[0][1][b"dead:reason"].decode()
    assert reason.startswith("prepare_items: ValueError: thirteen is not allowed"), reason
    threads = {t.decode() for t in client.lrange("prep:threads", 0, -1)}
    assert any(t.startswith("read-ahead-") for t in threads), threads  # prepared ahead


def test_a_slow_prepare_ahead_counts_as_progress(valkey, tmp_path: Path) -> None:
    """The handler's thread waits for a chunk being prepared ahead (64 x 20 ms here); the
    replica is making progress meanwhile, so it must not look stalled (which withholds its
    heartbeat and gets it restarted)."""
    client = redis.Redis.from_url(valkey.url)
    total = 3 * READ_COUNT
    _send(client, range(total))
    with _running(_graph(tmp_path, "SlowPrepare"), valkey.url) as runner:
        wait_for(lambda: len(_out(client)) > 0, 20, "the first entry handled")
        worst = 0.0  # from the first output on: the start-up is not this test's business
        deadline = time.monotonic() + 60
        while len(_out(client)) < total and time.monotonic() < deadline:
            worst = max(worst, time.monotonic() - runner.binding.last_tick)
            time.sleep(0.01)
    assert [n for _, n, _ in _out(client)] == list(range(total))
    assert worst < 0.5, f"no sign of progress for {worst:.2f} s while preparing"


def test_a_stop_during_a_slow_read_ahead_ends_soon_and_before_teardown(
        valkey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped while a chunk of 64 is being prepared (100 ms each): the replica ends after the
    prepare call in hand, not after the chunk (6.4 s), and no prepare call runs after its
    teardown; what was not handled stays pending (delivered again), nothing is lost."""
    monkeypatch.syspath_prepend(str(tmp_path))
    client = redis.Redis.from_url(valkey.url)
    total = 3 * READ_COUNT
    _send(client, range(total))
    graph = _graph(tmp_path, "SlowBatches")
    import prep_agents  # type: ignore[import-not-found]  # the module the runner loads

    with _running(graph, valkey.url):
        wait_for(lambda: len(_out(client)) >= 8, 30, "the first batch handled")
        t0 = time.monotonic()
    took = time.monotonic() - t0  # _running stopped the replica and joined its thread
    time.sleep(0.3)
    assert prep_agents.SlowBatches.after_teardown == []
    assert took < 3.0, f"stopping took {took:.1f} s"
    handled = [n for _, n, _ in _out(client)]
    pending = client.xpending(STREAM, "sink")["pending"]
    assert handled == list(range(len(handled)))  # in order, none doubled
    unread = total - len(handled) - pending  # never delivered to the group yet
    assert unread >= 0 and len(handled) + pending + unread == total


def test_a_prepare_hook_that_finds_the_broker_away_is_retried_not_dead_lettered(
        valkey, tmp_path: Path) -> None:
    client = redis.Redis.from_url(valkey.url)
    total = 2 * READ_COUNT  # a backlog: the hook runs on the read-ahead thread first
    _send(client, range(total))
    with _running(_graph(tmp_path, "Flaky"), valkey.url) as runner:
        wait_for(lambda: len(_out(client)) == total, 30, "every entry handled")
        assert runner.stats_in["items"].dead == 0
    assert [n for _, n, _ in _out(client)] == list(range(total))
    assert client.xlen(STREAM + ":dead") == 0


def test_an_idle_input_is_prepared_in_the_handler_thread(valkey, tmp_path: Path) -> None:
    client = redis.Redis.from_url(valkey.url)
    with _running(_graph(tmp_path, "Doubles"), valkey.url):
        for n in range(3):  # one at a time: no backlog, nothing handed between threads
            _send(client, range(n, n + 1))
            wait_for(lambda n=n: len(_out(client)) == n + 1, 20, f"entry {n} handled")
    assert [n for _, n, _ in _out(client)] == [0, 2, 4]
    assert [t.decode() for t in client.lrange("prep:threads", 0, -1)] == ["handler"] * 3


def test_the_harness_runs_the_hook_and_raises_what_it_raised(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    shutil.copy(Path(__file__).parents[1] / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    (tmp_path / "prep_agents.py").write_text(AGENTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import fakeredis
    from prep_agents import Doubles  # type: ignore[import-not-found]

    from pgtest_agents import Item
    from procgraph import AgentContext

    ctx = AgentContext(agent="sink", redis_factory=lambda: fakeredis.FakeRedis())
    with AgentHarness(Doubles, context=ctx) as h:
        h.feed("items", [Item(n=1, key="a"), Item(n=4, key="b")])
        assert [(m.key, m.n) for m in h.sent["out"]] == [("a", 2), ("b", 8)]
        with pytest.raises(ValueError, match="thirteen"):
            h.feed("items", Item(n=13))
