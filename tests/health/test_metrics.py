"""The supervisor's Prometheus endpoint on a real line (procgraph.metrics): what it exports,
that it stays within METRIC_NAMES, and the latency histogram the heartbeat carries."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable

import redis
from prometheus_client.parser import text_string_to_metric_families

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.health import LATENCY_BUCKETS_MS, add_line_counter
from procgraph.metrics import METRIC_NAMES
from procgraph.runtime.heartbeat import LatencyWindow
from procgraph.supervisor import Supervisor

COUNT = 50
LINE = f"""
name: metered
metrics: {{host: 127.0.0.1, port: 0}}
agents:
  numbers: {{class: pgtest_agents:Numbers, params: {{count: {COUNT}, rate_hz: 0}}}}
  sink:
    class: pgtest_agents:Recorder
    inputs: {{items: numbers.out}}
    params: {{poison: [k3]}}
    max_deliveries: 1
"""


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:
    """The one sample named ``name`` whose labels include ``labels``."""
    found = [v for (n, ls), v in samples.items()
             if n == name and set(labels.items()) <= set(ls)]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def test_a_running_line_exports_its_replicas_edges_and_counters(
        valkey: EmbeddedBroker, run_graph: Callable[..., object]) -> None:
    client = redis.Redis.from_url(valkey.url)
    with run_graph(LINE, redis_url=valkey.url) as sup:  # type: ignore[attr-defined]
        assert isinstance(sup, Supervisor) and sup.metrics is not None
        url = sup.metrics.url
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        assert f"supervisor | metrics at {url}\n" in sup.out.getvalue()  # type: ignore[attr-defined]
        add_line_counter(client, "metered", "parts:ok", 7)
        add_line_counter(client, "metered", "broker_data_lost", 1)

        def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            got = scrape(url)
            done = value(got, "procgraph_messages_in_total", agent="sink", port="items")
            # each replica's figures come with its own heartbeat (every second): wait for both
            sent = value(got, "procgraph_messages_out_total", agent="numbers", port="out")
            return got if done == COUNT - 1 and sent == COUNT else None

        samples = wait_for(settled, 30, "the sink to handle every item")
    print("\n".join(f"{n}{dict(ls)} {v}" for (n, ls), v in sorted(samples.items())))
    assert {n for n, _ in samples} <= METRIC_NAMES
    assert value(samples, "procgraph_up", agent="numbers", replica="0") == 1
    assert value(samples, "procgraph_up", agent="sink", replica="0") == 1
    assert value(samples, "procgraph_restarts_total", agent="sink") == 0
    assert value(samples, "procgraph_messages_out_total", agent="numbers", port="out") == COUNT
    assert value(samples, "procgraph_dead_lettered_total", agent="sink", port="items") == 1
    edge = {"stream": "pg:metered:numbers:out", "group": "sink"}
    assert value(samples, "procgraph_edge_acked_total", **edge) == COUNT  # dead ones acked too
    assert value(samples, "procgraph_edge_lag", **edge) == 0
    assert value(samples, "procgraph_edge_pending", **edge) == 0
    assert value(samples, "procgraph_edge_dropped_total", **edge) == 0
    assert value(samples, "procgraph_dead_letters", stream="pg:metered:numbers:out") == 1
    assert value(samples, "procgraph_stream_entries_added_total",
                 stream="pg:metered:numbers:out") == COUNT
    assert value(samples, "procgraph_parts_total", outcome="ok") == 7
    assert value(samples, "procgraph_line_events_total", counter="broker_data_lost") == 1
    assert value(samples, "procgraph_broker_up", broker="main") == 1
    hist = {"agent": "sink", "port": "items"}
    assert value(samples, "procgraph_input_latency_seconds_count", **hist) == COUNT - 1
    assert value(samples, "procgraph_input_latency_seconds_bucket", le="+Inf",
                 **hist) == COUNT - 1
    assert sup.metrics is None  # closed with the line


def test_a_stopped_replica_is_down_and_the_endpoint_is_closed_after(
        valkey: EmbeddedBroker, run_graph: Callable[..., object]) -> None:
    line = LINE.replace("metered", "metered2")
    with run_graph(line, redis_url=valkey.url) as sup:  # type: ignore[attr-defined]
        assert isinstance(sup, Supervisor) and sup.metrics is not None
        url = sup.metrics.url
        wait_for(lambda: value(scrape(url), "procgraph_up", agent="sink") == 1, 20, "sink up")
        redis.Redis.from_url(valkey.url).delete("pg:metered2:hb:sink:0")
        assert value(scrape(url), "procgraph_up", agent="sink") == 0
    try:
        urllib.request.urlopen(url, timeout=2)
    except OSError:
        pass
    else:
        raise AssertionError("the endpoint still answers after the line stopped")


def test_metrics_can_be_turned_off(valkey: EmbeddedBroker,
                                   run_graph: Callable[..., object]) -> None:
    line = LINE.replace("port: 0}", "port: 0, enabled: false}").replace("metered", "quiet")
    with run_graph(line, redis_url=valkey.url) as sup:  # type: ignore[attr-defined]
        assert isinstance(sup, Supervisor)
        assert sup.metrics is None
        assert "metrics at" not in sup.out.getvalue()  # type: ignore[attr-defined]


def test_latency_window_counts_every_value_in_its_bucket() -> None:
    window = LatencyWindow(maxlen=3)
    for ms in (0.5, 1.0, 3.0, 20000.0, 7.0):
        window.append(ms)
    assert list(window) == [3.0, 20000.0, 7.0]  # the p50 window keeps the recent ones
    cumulative = window.cumulative()
    assert len(cumulative) == len(LATENCY_BUCKETS_MS) + 1
    le = dict(zip([*LATENCY_BUCKETS_MS, float("inf")], cumulative, strict=True))
    assert le[1] == 2 and le[2.5] == 2 and le[5] == 3 and le[10] == 4 and le[10000] == 4
    assert le[float("inf")] == 5 and window.sum_ms == 20011.5


def test_a_metrics_port_in_use_warns_and_the_line_runs(
        valkey: EmbeddedBroker, run_graph: Callable[..., object]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = LINE.replace("port: 0}", f"port: {port}}}").replace("metered", "clash")
        with run_graph(line, redis_url=valkey.url) as sup:  # type: ignore[attr-defined]
            assert isinstance(sup, Supervisor) and sup.metrics is None
            out = sup.out.getvalue()  # type: ignore[attr-defined]
            assert f"warning: cannot serve metrics on 127.0.0.1:{port}: " in out, out
            assert "give another metrics: {port: N} in the graph" in out
            assert "agent(s) started" in out and "Traceback" not in out
