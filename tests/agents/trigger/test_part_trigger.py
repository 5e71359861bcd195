"""PartTrigger and the synthetic cameras on it: one trigger per part, both views share the
key by construction, a stale trigger is skipped, the counter survives a restart."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import redis
from procgraph.agents.camera import SyntheticPartCamera, SyntheticTriggeredCamera
from procgraph.agents.messages import Frame, Trigger
from procgraph.agents.trigger import PartTrigger

from pgtest_util import wait_for
from procgraph import codec
from procgraph.testing import AgentHarness


def triggers(h: AgentHarness) -> list[Trigger]:
    return [t for t in h.sent["triggers"] if isinstance(t, Trigger)]


def frames(h: AgentHarness) -> list[Frame]:
    return [f for f in h.sent["frames"] if isinstance(f, Frame)]


def test_trigger_counts_parts_and_resumes_from_its_state() -> None:
    first = AgentHarness(PartTrigger, {"rate_hz": 200, "count": 3})
    with first.running():
        wait_for(lambda: len(triggers(first)) == 3)
        time.sleep(0.05)  # count reached: nothing more
    assert [(t.key, t.seq) for t in triggers(first)] == [(f"part-{i}", i) for i in range(3)]
    assert first.state.get("next_seq") == 3
    stamps = [t.trigger_ns for t in triggers(first)]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 8_000_000  # 200/s paced
    again = AgentHarness(PartTrigger, {"rate_hz": 200, "count": 5, "key_format": "p{seq}"},
                         state=first.state)
    with again.running():
        wait_for(lambda: len(triggers(again)) == 2)
    assert [t.key for t in triggers(again)] == ["p3", "p4"]


def test_wait_for_without_a_broker_triggers_anyway(caplog: pytest.LogCaptureFixture) -> None:
    h = AgentHarness(PartTrigger, {"rate_hz": 200, "count": 1, "wait_for": ["cam"]})
    with h.running():
        wait_for(lambda: len(triggers(h)) == 1)
    assert "no broker: not waiting for cam" in caplog.text


def test_a_bad_key_format_is_refused_at_setup() -> None:
    with pytest.raises(ValueError, match="only use"), AgentHarness(
            PartTrigger, {"key_format": "part-{camera}"}):
        pass


def test_triggered_cameras_share_the_key_and_the_part() -> None:
    now = time.time_ns()
    ts = [Trigger(key=f"part-{i}", seq=i, trigger_ns=now) for i in (4, 5, 9)]
    params = {"seed": 3, "defect_rate": 0.5, "preview_width": 0}
    with AgentHarness(SyntheticTriggeredCamera, {**params, "camera": "front"}) as front, \
            AgentHarness(SyntheticTriggeredCamera,
                         {**params, "camera": "back", "view": "back"}) as back:
        front.feed("trigger", ts)
        back.feed("trigger", ts)
    f, b = frames(front), frames(back)
    assert [(x.key, x.seq) for x in f] == [(x.key, x.seq) for x in b] == [
        ("part-4", 4), ("part-5", 5), ("part-9", 9)]
    assert [x.camera for x in f + b] == ["front"] * 3 + ["back"] * 3
    # the same part a free-running camera draws as its part 9: byte for byte
    free = AgentHarness(SyntheticPartCamera, {**params, "camera": "front", "rate_hz": 500,
                                              "count": 10})
    free.state.put("next_seq", 9)
    with free.running():
        wait_for(lambda: len(frames(free)) == 1)
    assert np.array_equal(frames(free)[0].image, f[2].image)
    assert frames(free)[0].truth == f[2].truth


def test_a_stale_trigger_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    now = time.time_ns()
    stale = Trigger(key="part-1", seq=1, trigger_ns=now - 5_000_000_000)
    fresh = Trigger(key="part-2", seq=2, trigger_ns=now)
    with AgentHarness(SyntheticTriggeredCamera, {"max_trigger_age_ms": 1000}) as h:
        h.feed("trigger", [stale, fresh])
        assert h.agent.skipped == 1
    assert [x.key for x in frames(h)] == ["part-2"]
    assert re.search(r"trigger part-1 is 5\d\d\d ms old: part gone", caplog.text)
    assert len(h.sent["preview"]) == 1


def test_trigger_drives_both_cameras_through_real_streams(valkey, run_graph):
    client = redis.Redis.from_url(valkey.url)
    graph = """
name: trig
brokers: {main: {url: embedded}}
agents:
  trigger: {class: "procgraph.agents.trigger:PartTrigger",
            params: {rate_hz: 40, count: 20, wait_for: [front, back]}}
  front: {class: "procgraph.agents.camera:SyntheticTriggeredCamera",
          inputs: {trigger: trigger.triggers},
          params: {camera: front, view: front, seed: 3, size: [64, 64]}}
  back: {class: "procgraph.agents.camera:SyntheticTriggeredCamera",
         inputs: {trigger: trigger.triggers},
         params: {camera: back, view: back, seed: 3, size: [64, 64]}}
"""
    with run_graph(graph, redis_url=valkey.url):
        wait_for(lambda: client.xlen("pg:trig:front:frames") >= 20
                 and client.xlen("pg:trig:back:frames") >= 20, 30, "20 frames per camera")
    got = {cam: [codec.decode(x, Frame) for _, x in client.xrange(f"pg:trig:{cam}:frames")]
           for cam in ("front", "back")}
    want = [f"part-{i}" for i in range(20)]
    assert [f.key for f in got["front"]] == [f.key for f in got["back"]] == want
    assert [f.seq for f in got["back"]] == list(range(20))
