"""procgraph.testing: the in-process harness runs the lifecycle through the real codec."""

from __future__ import annotations

import pytest
from pgtest_api_agents import (
    ApiHotReading,
    ApiReading,
    Judge,
)

from procgraph import Agent, Input, Message, Output
from procgraph.errors import CodecError
from procgraph.testing import AgentHarness, run_agent


def test_harness_runs_lifecycle_and_collects_outputs() -> None:
    with AgentHarness(Judge, {"limit": 5}) as h:
        assert h.agent.events == ["setup"]
        h.feed("readings", [ApiReading(value=v, seq=i) for i, v in enumerate([1, 9, 3])])
    assert h.agent.events == ["setup", "teardown"]
    assert not h.agent.running
    assert [v.ok for v in h.sent["verdicts"]] == [True, False, True]
    assert [v.source_seq for v in h.sent["verdicts"]] == [0, 1, 2]
    # a subclass goes out of an output of its base type, and arrives as itself
    assert [type(a) for a in h.sent["alarms"]] == [ApiHotReading]
    assert h.agent.alarms.sent == 1 and h.agent.verdicts.sent == 3


def test_run_agent_helper() -> None:
    out = run_agent(Judge, {"limit": 0}, {"readings": [ApiReading(value=1)]})
    assert [v.ok for v in out["verdicts"]] == [False]


def test_feeding_an_unknown_port_is_a_key_error() -> None:
    with AgentHarness(Judge) as h, pytest.raises(KeyError, match="no input 'reading'"):
        h.feed("reading", ApiReading(value=1))


def test_batch_handler_receives_decoded_messages_of_the_port_type() -> None:
    seen: list[type] = []

    class Kinds(Agent):
        readings = Input(ApiReading, batch=2)

        def on_readings(self, msgs: list[ApiReading]) -> None:
            seen.extend(type(m) for m in msgs)

    with AgentHarness(Kinds) as h:
        h.feed("readings", [ApiReading(value=1), ApiHotReading(value=2)])
    assert seen == [ApiReading, ApiHotReading]


def test_harness_sends_through_the_real_codec() -> None:
    class Blob(Message):
        blob: bytes = b""

    class Blobber(Agent):
        readings = Input(ApiReading)
        out = Output(Blob)

        def on_readings(self, msg: ApiReading) -> None:
            self.out.send(Blob(blob=b"\xff\xfe"))

    with AgentHarness(Blobber) as h, pytest.raises(CodecError):
        h.feed("readings", ApiReading(value=1))


class Counter(Agent):
    """Counts readings in its state; fails on a negative one after writing state."""

    readings = Input(ApiReading)

    def setup(self) -> None:
        self.seen = self.state.keyset("seen")

    def on_readings(self, msg: ApiReading) -> None:
        self.state.put("count", self.state.get("count", 0) + 1)
        if msg.value < 0:
            raise ValueError("negative")
        self.seen.add(msg.key)


def test_harness_state_is_in_memory_and_survives_a_restart() -> None:
    with AgentHarness(Counter) as first:
        first.feed("readings", [ApiReading(value=1, key="a"), ApiReading(value=2, key="b")])
        assert first.agent.state.get("count") == 2
        assert not first.state.dirty  # flushed after each handler, as the runtime does
    with AgentHarness(Counter, state=first.state) as second:  # "restarted" on the same state
        assert second.agent.state.get("count") == 2
        assert "a" in second.agent.seen and "c" not in second.agent.seen
        second.feed("readings", ApiReading(value=3, key="c"))
    assert second.state.get("count") == 3


def test_a_failed_handler_leaves_no_state_behind() -> None:
    with AgentHarness(Counter) as h:
        h.feed("readings", ApiReading(value=1, key="a"))
        with pytest.raises(ValueError, match="negative"):
            h.feed("readings", ApiReading(value=-1, key="bad"))
        assert h.agent.state.get("count") == 1  # the failed call's put was dropped
        assert "bad" not in h.agent.seen


def test_run_agent_takes_a_state() -> None:
    from procgraph.state import AgentState

    state = AgentState.in_memory(agent="counter")
    run_agent(Counter, inputs={"readings": [ApiReading(value=1, key="x")]}, state=state)
    assert state.get("count") == 1 and "x" in state.keyset("seen")
