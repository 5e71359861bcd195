"""The inspection line end to end: real broker, real agents, real Modbus TCP PLC (simulated
PLC program), the graph from graphs/inspection.yaml (cameras -> classifiers -> join -> PLC
writer). Every part is counted at the PLC: lost, duplicated, incomplete."""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from procgraph.agents.messages import PartOutcome
from procgraph.agents.modbus.sim import SimulatedPlc

from pgtest_util import wait_for
from procgraph import codec
from procgraph.brokers import free_port
from procgraph.graph import load_graph
from procgraph.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]
GRAPH = ROOT / "graphs" / "inspection.yaml"
pytestmark = pytest.mark.skipif(
    not (ROOT / "models" / "parts-front.onnx").exists(), reason="demo models not built"
)


@contextmanager
def line(url: str, parts: int, rate: float, window_ms: int = 3000, clf_replicas: int = 1,
         ) -> Iterator[tuple[Supervisor, SimulatedPlc]]:
    """Run the inspection graph against ``url`` with the test's own simulated PLC."""
    plc_port = free_port()
    env = {"PROCGRAPH_REDIS": url, "PLC_PORT": str(plc_port), "PLC_SIM": "false",
           "HMI_PORT": str(free_port()), "PART_COUNT": str(parts), "PARTS_PER_S": str(rate),
           "JOIN_WINDOW_MS": str(window_ms)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    plc = SimulatedPlc("127.0.0.1", plc_port)
    plc.start_thread()
    try:
        plan = load_graph(GRAPH)
        for name in ("front_clf", "back_clf"):
            plan.agents[name].replicas = clf_replicas
        out = io.StringIO()
        sup = Supervisor(plan, out=out, colour=False)
        sup.start_in_thread()
        try:
            yield sup, plc
        finally:
            sup.shutdown()
            print(out.getvalue()[-6000:])
    finally:
        plc.stop_thread()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def outcomes(client: redis.Redis) -> dict[str, PartOutcome]:
    """Every PartOutcome the PLC writer published as written, by part key (each once)."""
    entries = client.xrange("pg:inspection:plc:written")
    decoded = [codec.decode(f, PartOutcome) for _, f in entries]
    keys = [o.key for o in decoded]
    assert len(keys) == len(set(keys)), "the PLC writer reported a part written twice"
    return {o.key: o for o in decoded}


def check_exactly_once(plc: SimulatedPlc, client: redis.Redis, parts: int) -> None:
    """Every part reached the PLC once, with the outcome the verdicts call for."""
    keys = [p["key"] for p in plc.received]
    assert sorted(keys) == sorted(f"part-{i}" for i in range(parts)), keys
    assert not any(p["duplicate"] for p in plc.received)
    assert plc.violations == []
    published = outcomes(client)
    for p in plc.received:
        o = published[p["key"]]
        assert p["outcome"] == o.outcome and p["reject"] == o.reject
        assert p["seq"] == o.part_seq and o.plc_written_ns is not None
        if o.outcome != "incomplete":
            front, back = o.verdicts["front"].defective, o.verdicts["back"].defective
            expected = {(False, False): "ok", (True, False): "defective_front",
                        (False, True): "defective_back", (True, True): "defective_both"}
            assert o.outcome == expected[(front, back)]
            assert o.verdicts["front"].model.name == "parts-front"
            assert len(o.verdicts["front"].model.sha256) == 64


def test_every_part_reaches_the_plc_once(valkey):
    client = redis.Redis.from_url(valkey.url)
    n = 40
    with line(valkey.url, parts=n, rate=10) as (_sup, plc):
        plc.wait_for_parts(n, timeout_s=60)
        time.sleep(0.5)  # a duplicate, if any, would arrive now
    check_exactly_once(plc, client, n)
    published = outcomes(client)
    assert sum(o.outcome == "incomplete" for o in published.values()) == 0
    # the line carries the models' decisions faithfully; the models' own accuracy is
    # checked in tests/agents/test_parts.py, so this only catches a line that garbles them
    correct = sum(o.reject == o.truth_defective for o in published.values())
    assert correct >= 0.7 * n, f"only {correct}/{n} parts judged right"


def test_plc_away_for_seconds_loses_and_duplicates_nothing(valkey):
    client = redis.Redis.from_url(valkey.url)
    n = 60
    with line(valkey.url, parts=n, rate=10, window_ms=3000) as (_sup, plc):
        plc.wait_for_parts(10, timeout_s=60)
        plc.stop_thread()
        time.sleep(4.0)  # the PLC is away while the cameras keep producing
        plc.start_thread()
        plc.wait_for_parts(n, timeout_s=90)
        time.sleep(0.5)
    check_exactly_once(plc, client, n)
    # the PLC being away must not turn on-time verdicts into fail-safe outcomes
    assert all(o.outcome != "incomplete" for o in outcomes(client).values())


def test_classifier_killed_mid_run_loses_nothing(valkey):
    client = redis.Redis.from_url(valkey.url)
    n = 60
    with line(valkey.url, parts=n, rate=10, window_ms=60000) as (sup, plc):
        plc.wait_for_parts(10, timeout_s=60)
        victim = next(r for r in sup.replicas if r.agent.name == "front_clf")
        pid = victim.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: victim.restarts >= 1, 20, "the classifier to be restarted")
        plc.wait_for_parts(n, timeout_s=120)
        time.sleep(0.5)
    check_exactly_once(plc, client, n)


def test_join_killed_mid_run_loses_and_duplicates_nothing(valkey):
    """kill -9 of the join: half-joined parts and decided keys come back from its state, and
    an outcome it emitted twice (killed before its acks) reaches the PLC once."""
    client = redis.Redis.from_url(valkey.url)
    n = 60
    with line(valkey.url, parts=n, rate=10, window_ms=60000) as (sup, plc):
        plc.wait_for_parts(15, timeout_s=60)
        victim = next(r for r in sup.replicas if r.agent.name == "join")
        pid = victim.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: victim.restarts >= 1, 20, "the join to be restarted")
        plc.wait_for_parts(n, timeout_s=120)
        time.sleep(0.5)
    check_exactly_once(plc, client, n)
    assert all(o.outcome != "incomplete" for o in outcomes(client).values())
