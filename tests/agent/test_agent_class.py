"""procgraph.agent: declaring an agent (ports, handlers, params) and its public methods."""

from __future__ import annotations

import threading
import time

import pytest
from pgtest_api_agents import (
    ApiFrame,
    ApiReading,
    ApiVerdict,
    Judge,
    Ticker,
)
from pydantic import BaseModel, ValidationError

import procgraph
from procgraph import Agent, AgentContext, Input, Message, Output
from procgraph.testing import AgentHarness


def test_public_api_names() -> None:
    assert {"Agent", "Input", "Message", "Output", "AgentContext", "ProcgraphError"} <= set(
        procgraph.__all__)
    for name in procgraph.__all__:
        assert getattr(procgraph, name) is not None
    assert procgraph.Agent is Agent and procgraph.Message is Message


def test_ports_are_collected_and_inherited() -> None:
    assert list(Judge.inputs) == ["readings"]
    assert list(Judge.outputs) == ["verdicts", "alarms"]
    assert Judge.inputs["readings"].type is ApiReading
    assert Judge.inputs["readings"].name == "readings"

    class LoudJudge(Judge):
        shouts = Output(ApiVerdict)

    assert list(LoudJudge.inputs) == ["readings"]
    assert list(LoudJudge.outputs) == ["verdicts", "alarms", "shouts"]
    assert list(Judge.outputs) == ["verdicts", "alarms"]  # the parent is untouched
    assert not Judge(context=AgentContext()).is_source
    assert Ticker(context=AgentContext()).is_source


def test_missing_handler_fails_at_class_definition_with_the_fix() -> None:
    with pytest.raises(TypeError) as info:

        class NoHandler(Agent):
            frames = Input(ApiFrame)

    msg = str(info.value)
    assert "NoHandler" in msg and "'frames'" in msg
    assert "def on_frames(self, msg)" in msg


def test_handler_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="on_frames"):

        class Attr(Agent):
            frames = Input(ApiFrame)
            on_frames = 3


def test_handler_may_be_inherited() -> None:
    class Base(Agent):
        frames = Input(ApiFrame)

        def on_frames(self, msg: ApiFrame) -> None:
            pass

    class Child(Base):
        pass

    assert list(Child.inputs) == ["frames"]


def test_params_must_subclass_agent_params() -> None:
    with pytest.raises(TypeError, match=r"Agent\.Params"):

        class Bad(Agent):
            class Params(BaseModel):
                x: int = 1


def test_params_are_validated() -> None:
    assert Judge.Params().limit == 10.0
    assert Judge.Params(limit="2.5").limit == 2.5  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="limit"):
        Judge.Params(limit="high")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="extra"):
        Judge.Params(limt=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AgentHarness(Judge, {"limit": []})
    with AgentHarness(Judge, {"limit": 1}) as h:
        assert h.agent.params.limit == 1.0
        assert isinstance(h.agent.params, Judge.Params)


def test_output_of_an_unstarted_agent_says_so() -> None:
    agent = Judge()
    with pytest.raises(RuntimeError, match="not connected"):
        agent.verdicts.send(ApiVerdict(ok=True))
    assert isinstance(Judge.verdicts, Output)  # class access gives the declaration


def test_agent_without_inputs_must_override_run() -> None:
    class Silent(Agent):
        out = Output(ApiReading)

    with pytest.raises(NotImplementedError, match="override run"):
        Silent().run()


def test_running_stop_and_sleep() -> None:
    agent = Ticker()
    assert agent.running
    t0 = time.monotonic()
    assert agent.sleep(0.05) is True
    assert time.monotonic() - t0 >= 0.04
    assert agent.sleep(-1) is True  # negative sleeps do not raise
    threading.Timer(0.05, agent.stop).start()
    t0 = time.monotonic()
    assert agent.sleep(30) is False  # woken early by stop()
    assert time.monotonic() - t0 < 5
    assert not agent.running
    t0 = time.monotonic()
    assert agent.sleep(30) is False  # stopped: returns at once
    assert time.monotonic() - t0 < 1
    agent.stop()  # idempotent
    assert not agent.running


def test_params_of_another_class_are_refused() -> None:
    class Other(Agent):
        class Params(Agent.Params):
            limit: float = 1.0

        out = Output(ApiReading)

        def run(self) -> None:
            pass

    with pytest.raises(TypeError, match=r"Judge needs params of type Judge\.Params"):
        Judge(Other.Params())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Judge\.Params"):
        Judge(Agent.Params())
    assert Judge(Judge.Params(limit=2)).params.limit == 2


def test_params_annotation_types_self_params() -> None:
    class Typed(Agent):
        class Params(Agent.Params):
            factor: float = 2.0

        params: Params
        out = Output(ApiReading)

        def run(self) -> None:
            self.out.send(ApiReading(value=self.params.factor))

    assert Typed().params.factor == 2.0
    assert "params" not in Typed.outputs and "params" not in Typed.inputs


def test_agent_keeps_no_runtime_fields_of_its_own() -> None:
    agent = Judge()
    assert set(vars(agent)) == {"params", "context", "log", "binding"}
    with pytest.raises(RuntimeError, match="not been started"):
        agent.state  # noqa: B018


def test_teardown_runs_after_a_failed_setup() -> None:
    events: list[str] = []

    class Fragile(Agent):
        readings = Input(ApiReading)

        def setup(self) -> None:
            events.append("setup")
            raise OSError("camera not found")

        def on_readings(self, msg: ApiReading) -> None:
            events.append("handled")

        def teardown(self) -> None:
            events.append("teardown")

    with pytest.raises(OSError, match="camera not found"), AgentHarness(Fragile) as h:
        h.feed("readings", ApiReading(value=1))
    assert events == ["setup", "teardown"]
