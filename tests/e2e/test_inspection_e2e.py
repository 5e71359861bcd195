"""The inspection line end to end: real broker, real agents, real Modbus TCP PLC (simulated
PLC program), the graph from graphs/inspection.yaml (cameras -> classifiers -> join -> PLC
writer). Every part is counted at the PLC: lost, duplicated, incomplete."""

from __future__ import annotations

import io
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from procgraph.agents.messages import PartOutcome, Trigger
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
    with line(valkey.url, parts=n, rate=10) as (sup, plc):
        plc.wait_for_parts(n, timeout_s=60)
        time.sleep(0.5)  # a duplicate, if any, would arrive now
    check_exactly_once(plc, client, n)
    # the supervisor's closing line counts what the join decided: the PLC's figures exactly
    by = Counter(p["outcome"] for p in plc.received)
    shown = ", ".join(f"{k} {v}" for k, v in sorted(by.items(),
                                                    key=lambda i: (i[0] != "ok", i[0])))
    said = (sup.log_dir / "supervisor.log").read_text()
    assert f"this run: {n} parts ({shown})" in said, said
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


def trigger_times(client: redis.Redis) -> dict[str, int]:
    """When each part was triggered (ns): the trigger's stream; without a trigger (free-run
    cameras) the front camera's capture."""
    if client.exists("pg:inspection:trigger:triggers"):
        entries = client.xrange("pg:inspection:trigger:triggers")
        return {t.key: t.trigger_ns for t in (codec.decode(f, Trigger) for _, f in entries)}
    entries = client.xrange("pg:inspection:front_cam:frames")
    return {h["key"]: h["data"]["capture_ns"] for h in (codec.read_header(x) for _, x in entries)}


def resumed_ns(client: redis.Redis, camera: str, after_ns: int) -> int:
    """Capture time of ``camera``'s first frame after ``after_ns``: when it was back."""
    entries = client.xrange(f"pg:inspection:{camera}:frames")
    return min(t for t in (codec.read_header(x)["data"]["capture_ns"] for _, x in entries)
               if t > after_ns)


def outage_figures(plc: SimulatedPlc, client: redis.Redis, parts: int,
                   outages: list[tuple[int, int]]) -> dict[str, object]:
    """Counts at the PLC over parts 0..parts-1, and the incomplete ones triggered outside the
    outages (``(down_ns, up_ns)`` each)."""
    got = [p for p in plc.received if int(p["key"].split("-")[1]) < parts]
    keys = [p["key"] for p in got]
    want = {f"part-{i}" for i in range(parts)}
    triggered = trigger_times(client)
    incomplete = sorted((p["key"] for p in got if p["outcome"] == "incomplete"),
                        key=lambda k: int(k.split("-")[1]))
    margin = 500_000_000  # a trigger read just before the stall, a frame in flight at SIGCONT
    outside = [k for k in incomplete
               if not any(a - margin <= triggered[k] <= b + margin for a, b in outages)]
    figures = {"parts": len(set(keys)), "incomplete": len(incomplete),
               "lost": len(want - set(keys)), "duplicated": len(keys) - len(set(keys)),
               "incomplete_outside_outage": len(outside),
               "outage_s": round(sum(b - a for a, b in outages) / 1e9, 2)}
    print("figures:", figures, "incomplete:", incomplete)
    return figures


@pytest.mark.slow
def test_camera_stalled_4s_only_parts_triggered_meanwhile_are_incomplete(valkey):
    """SIGSTOP of one camera for 4 s: the parts triggered while it was stopped turn
    incomplete (fail-safe reject); every other part joins. Nothing lost, nothing doubled."""
    client = redis.Redis.from_url(valkey.url)
    n = 100
    with line(valkey.url, parts=n, rate=10) as (sup, plc):
        plc.wait_for_parts(15, timeout_s=60)
        victim = next(r for r in sup.replicas if r.agent.name == "back_cam")
        pid = victim.pid
        assert pid is not None
        down = time.time_ns()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(4.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        plc.wait_for_parts(n, timeout_s=90)
        time.sleep(0.5)
    up = resumed_ns(client, "back_cam", down)
    f = outage_figures(plc, client, n, [(down, up)])
    assert (f["lost"], f["duplicated"]) == (0, 0), f
    assert plc.violations == []
    assert f["incomplete_outside_outage"] == 0, f
    assert 0 < f["incomplete"] <= 10 * (up - down) / 1e9 + 5, f  # 10 parts/s while down


@pytest.mark.slow
def test_both_cameras_stalled_4s_parts_no_camera_saw_still_reach_the_plc(valkey):
    """SIGSTOP of both cameras for 4 s: the triggers older than max_trigger_age_ms (2 s) when
    the cameras resume are skipped by both, so no verdict of those parts exists. The join
    reads the trigger too and gives them the fail-safe outcome: every part reaches the PLC
    once, the ones triggered meanwhile incomplete (before: those parts never reached it)."""
    client = redis.Redis.from_url(valkey.url)
    n = 100
    with line(valkey.url, parts=n, rate=10) as (sup, plc):
        plc.wait_for_parts(15, timeout_s=60)
        pids = [r.pid for r in sup.replicas if r.agent.name in ("front_cam", "back_cam")]
        assert len(pids) == 2 and None not in pids
        down = time.time_ns()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)  # type: ignore[arg-type]
        try:
            time.sleep(4.0)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)  # type: ignore[arg-type]
        plc.wait_for_parts(n, timeout_s=90)
        time.sleep(0.5)
    up = max(resumed_ns(client, cam, down) for cam in ("front_cam", "back_cam"))
    f = outage_figures(plc, client, n, [(down, up)])
    unseen = [k for k, o in outcomes(client).items() if not o.verdicts]
    print("parts no camera saw:", sorted(unseen, key=lambda k: int(k.split("-")[1])))
    assert (f["lost"], f["duplicated"]) == (0, 0), f
    assert plc.violations == []
    assert f["incomplete_outside_outage"] == 0, f
    assert unseen, "no part was skipped by both cameras: the stall did not test the rule"
    assert all(outcomes(client)[k].missing == ["front", "back"] for k in unseen)


def back_frames_after(client: redis.Redis, after_ns: int) -> int:
    """How many frames the back camera captured after ``after_ns``."""
    entries = client.xrevrange("pg:inspection:back_cam:frames", count=50)
    return sum(codec.read_header(x)["data"]["capture_ns"] > after_ns for _, x in entries)


def last_trigger_seq(client: redis.Redis) -> int:
    """The seq of the newest trigger."""
    [(_, fields)] = client.xrevrange("pg:inspection:trigger:triggers", count=1)
    return codec.decode(fields, Trigger).seq


@pytest.mark.slow
def test_camera_killed_twice_only_parts_triggered_meanwhile_are_incomplete(valkey):
    """kill -9 of one camera, twice: the parts triggered while it was down (restart included)
    turn incomplete; the line lines up again by itself each time. The trigger runs on (no
    count) so that the camera's restart time, whatever it is, leaves parts after it."""
    client = redis.Redis.from_url(valkey.url)
    outages: list[tuple[int, int]] = []
    with line(valkey.url, parts=0, rate=10) as (sup, plc):
        plc.wait_for_parts(10, timeout_s=60)
        victim = next(r for r in sup.replicas if r.agent.name == "back_cam")
        for kill in (1, 2):
            pid = victim.pid
            assert pid is not None
            down = time.time_ns()
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda k=kill: victim.restarts >= k, 20, "the camera to be restarted")
            wait_for(lambda d=down: back_frames_after(client, d) >= 10, 60,
                     "10 frames from the restarted camera")
            outages.append((down, resumed_ns(client, "back_cam", down)))
        n = last_trigger_seq(client) + 10
        wait_for(lambda: {f"part-{i}" for i in range(n)} <= {p["key"] for p in plc.received},
                 60, f"parts 0..{n - 1} at the PLC")
        time.sleep(0.5)
    f = outage_figures(plc, client, n, outages)
    assert (f["lost"], f["duplicated"]) == (0, 0), f
    assert plc.violations == []
    assert f["incomplete_outside_outage"] == 0, f
