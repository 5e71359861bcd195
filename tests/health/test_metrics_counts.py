"""Handler-time and end-to-end histograms, ``context.count`` line counters (parts by outcome)
and their export once per line (procgraph.metrics), on a real line and a real broker."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from procgraph.agents.join import JoinAgent
from procgraph.agents.messages import ModelInfo, Verdict
from test_metrics import scrape, value

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.constants import line_counters_key
from procgraph.context import AgentContext
from procgraph.graph import load_graph
from procgraph.health import HANDLER_BUCKETS_MS, read_line_counters
from procgraph.metrics import METRIC_NAMES, LineCollector
from procgraph.runtime.heartbeat import Histogram, flush_counts
from procgraph.supervisor import Supervisor
from procgraph.testing import AgentHarness

COUNT = 40
COUNTING = textwrap.dedent('''
    import time

    from pgtest_agents import Item
    from procgraph import Agent, Input


    class Counting(Agent):
        """Counts each item as a part (even n: ok, odd: defective); fails once on some."""

        class Params(Agent.Params):
            fail_once: list[str] = []
            sleep_ms: float = 0.0

        items = Input(Item)

        def setup(self) -> None:
            self.failed: set[str] = set()

        def on_items(self, msg: Item) -> None:
            self.context.count("parts:ok" if msg.n % 2 == 0 else "parts:defective")
            time.sleep(self.params.sleep_ms / 1000)
            if msg.key in self.params.fail_once and msg.key not in self.failed:
                self.failed.add(msg.key)
                raise ValueError("fails once: what this attempt counted is dropped")
''')
LINE = f"""
name: counted
metrics: {{host: 127.0.0.1, port: 0}}
agents:
  numbers: {{class: pgtest_agents:Numbers, params: {{count: {COUNT}, rate_hz: 0}}}}
  counter:
    class: pgtest_counting:Counting
    inputs: {{items: numbers.out}}
    params: {{fail_once: [k1, k2, k5], sleep_ms: 2}}
    max_deliveries: 3
"""


def test_count_is_in_memory_and_a_failed_attempt_counts_nothing() -> None:
    ctx = AgentContext()
    ctx.count("parts:ok")
    ctx.count("parts:ok", 2)
    ctx.line_counts.begin_attempt()
    ctx.count("parts:defective")
    assert ctx.counts == {"parts:ok": 3}  # held until the attempt commits
    ctx.line_counts.end_attempt(keep=False)
    ctx.line_counts.begin_attempt()
    ctx.count("parts:incomplete")
    ctx.line_counts.end_attempt(keep=True)
    assert ctx.counts == {"parts:ok": 3, "parts:incomplete": 1}
    assert ctx.line_counts.take() == {"parts:ok": 3, "parts:incomplete": 1}
    assert ctx.line_counts.take() == {}
    for bad_name in ("", "x" * 101, "a\nb"):
        with pytest.raises(ValueError, match="printable"):
            ctx.count(bad_name)
    for bad_amount in (-1, 1.5, True):
        with pytest.raises(ValueError, match="int >= 0"):
            ctx.count("parts:ok", bad_amount)  # type: ignore[arg-type]


def test_flush_counts_adds_to_the_line_counters_and_keeps_them_when_the_broker_is_away(
        valkey: EmbeddedBroker) -> None:
    client = redis.Redis.from_url(valkey.url)
    client.delete(line_counters_key("fl"))
    ctx = AgentContext(graph="fl")
    ctx.count("parts:ok", 2)
    flush_counts(client, "fl", ctx)
    ctx.count("parts:ok")
    ctx.count("rejected_incomplete")
    away = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with pytest.raises(Exception, match="line counters"):
        flush_counts(away, "fl", ctx)
    assert read_line_counters(client, "fl") == {"parts:ok": 2}
    flush_counts(client, "fl", ctx)  # what the failed flush took was put back
    assert read_line_counters(client, "fl") == {"parts:ok": 3, "rejected_incomplete": 1}


def test_the_join_counts_each_decided_part_by_outcome() -> None:
    model = ModelInfo(name="m", version="1", sha256="0" * 64)
    t0 = 1_800_000_000 * 10**9

    def verdict(key: str, camera: str, defective: bool = False, late_ms: float = 50) -> Verdict:
        return Verdict(key=key, camera=camera, seq=0, capture_ns=t0,
                       ts_ns=t0 + int(late_ms * 1e6), label="x", score=0.5,
                       defective=defective, scores={}, inference_ms=1.0, model=model)

    with AgentHarness(JoinAgent, {"window_ms": 1000}) as h:
        h.feed("verdicts", [verdict("p1", "front"), verdict("p1", "back"),
                            verdict("p2", "front", defective=True), verdict("p2", "back"),
                            verdict("p3", "front"), verdict("p3", "back", late_ms=5000),
                            verdict("p4", "front"), verdict("p4", "back")])
    assert h.agent.context.counts == {"parts:ok": 2, "parts:defective_front": 1,
                                      "parts:incomplete": 1}


def test_histogram_counts_cumulatively_in_its_bounds() -> None:
    hist = Histogram(HANDLER_BUCKETS_MS)
    for ms in (0.05, 0.1, 3.0, 99999.0):
        hist.observe(ms)
    cum = hist.cumulative()
    assert len(cum) == len(HANDLER_BUCKETS_MS) + 1
    assert cum[0] == 2 and cum[HANDLER_BUCKETS_MS.index(5)] == 3 and cum[-1] == 4
    assert hist.sum_ms == pytest.approx(100002.15)


def test_a_real_line_exports_handler_time_end_to_end_and_parts(
        valkey: EmbeddedBroker, run_graph: Callable[..., object], tmp_path: Path) -> None:
    (tmp_path / "pgtest_counting.py").write_text(COUNTING)
    redis.Redis.from_url(valkey.url).delete(line_counters_key("counted"))
    with run_graph(LINE, redis_url=valkey.url) as sup:  # type: ignore[attr-defined]
        assert isinstance(sup, Supervisor) and sup.metrics is not None
        url = sup.metrics.url
        port = {"agent": "counter", "port": "items"}

        def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            got = scrape(url)
            done = value(got, "procgraph_end_to_end_latency_seconds_count", **port)
            ok = value(got, "procgraph_parts_total", outcome="ok")
            bad = value(got, "procgraph_parts_total", outcome="defective")
            return got if (done, ok, bad) == (COUNT, COUNT / 2, COUNT / 2) else None

        samples = wait_for(settled, 30, "every item handled, its part counted and exported")
    print("\n".join(f"{n}{dict(ls)} {v}" for (n, ls), v in sorted(samples.items())
                    if "handler" in n or "end_to_end" in n or "parts" in n))
    assert {n for n, _ in samples} <= METRIC_NAMES
    # one observation per successful handler call; each slept 2 ms, so none is <= 1 ms
    assert value(samples, "procgraph_handler_seconds_count", **port) == COUNT
    assert value(samples, "procgraph_handler_seconds_bucket", le="0.001", **port) == 0
    assert value(samples, "procgraph_handler_seconds_bucket", le="+Inf", **port) == COUNT
    handler_s = value(samples, "procgraph_handler_seconds_sum", **port)
    assert handler_s is not None and COUNT * 0.002 <= handler_s < 5
    # end to end starts at the trace's origin (the source's send), before the handler
    e2e_s = value(samples, "procgraph_end_to_end_latency_seconds_sum", **port)
    assert e2e_s is not None and e2e_s >= handler_s
    assert value(samples, "procgraph_handler_errors_total", **port) == 3


def test_line_counters_are_exported_by_one_node_of_the_line(
        valkey: EmbeddedBroker, tmp_path: Path) -> None:
    graph = tmp_path / "nodes.yaml"
    graph.write_text(textwrap.dedent("""
        name: twonodes
        agents:
          a: {class: pgtest_agents:Numbers, node: west}
          b: {class: pgtest_agents:Recorder, node: east, inputs: {items: a.out}}
    """))
    (tmp_path / "pgtest_agents.py").write_text(
        (Path(__file__).parents[1] / "pgtest_agents.py").read_text())
    plan = load_graph(graph)
    client = redis.Redis.from_url(valkey.url)
    client.delete(line_counters_key("twonodes"))
    client.hincrby(line_counters_key("twonodes"), "parts:ok", 5)

    def parts(node: str | None) -> list[float]:
        fams = {m.name: m for m in LineCollector(plan, {"main": client}, node=node).collect()}
        return [s.value for s in fams["procgraph_parts"].samples]

    assert parts(None) == [5]
    assert parts("east") == [5]  # the first node by name
    assert parts("west") == []
