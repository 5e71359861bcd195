"""The public agent API: ports, params, handlers, sending, stamping, batching, lifecycle."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

import procgraph
from procgraph import Agent, AgentContext, Input, Message, Output
from procgraph.errors import CodecError
from procgraph.message import Hop
from procgraph.testing import AgentHarness, run_agent


class ApiReading(Message):
    value: float
    seq: int = 0


class ApiHotReading(ApiReading):
    alarm: bool = True


class ApiVerdict(Message):
    ok: bool
    source_seq: int = -1


class ApiFrame(Message):
    image: np.ndarray


class Judge(Agent):
    """Sends a verdict per reading; a second output only for alarms."""

    class Params(Agent.Params):
        limit: float = 10.0
        name: str = "judge"

    readings = Input(ApiReading)
    verdicts = Output(ApiVerdict)
    alarms = Output(ApiReading)

    def setup(self) -> None:
        self.events = ["setup"]

    def on_readings(self, msg: ApiReading) -> None:
        self.verdicts.send(ApiVerdict(ok=msg.value <= self.params.limit, source_seq=msg.seq))
        if msg.value > self.params.limit:
            self.alarms.send(ApiHotReading(value=msg.value, seq=msg.seq, key="explicit"))

    def teardown(self) -> None:
        self.events.append("teardown")


class Batcher(Agent):
    readings = Input(ApiReading, batch=3, max_wait_ms=5)
    sums = Output(ApiReading)

    def setup(self) -> None:
        self.sizes: list[int] = []

    def on_readings(self, msgs: list[ApiReading]) -> None:
        self.sizes.append(len(msgs))
        self.sums.send(ApiReading(value=sum(m.value for m in msgs), seq=len(msgs)))


class Ticker(Agent):
    """A source: sends ``count`` readings, then idles until stopped."""

    class Params(Agent.Params):
        count: int = 3

    out = Output(ApiReading)

    def run(self) -> None:
        for n in range(self.params.count):
            self.out.send(ApiReading(value=n, seq=n, key=f"t{n}"))
        while self.sleep(0.01):
            pass


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


@pytest.mark.parametrize(
    ("factory", "error", "needle"),
    [
        (lambda: Input(dict), TypeError, "Message subclass"),  # type: ignore[arg-type]
        (lambda: Output(int), TypeError, "Message subclass"),  # type: ignore[arg-type]
        (lambda: Input(ApiReading, batch=0), ValueError, "batch"),
        (lambda: Input(ApiReading, max_wait_ms=-1), ValueError, "max_wait_ms"),
        (lambda: Input(ApiReading, policy="fastest"), ValueError, "policy"),  # type: ignore
        (lambda: Output(ApiReading, maxlen=0), ValueError, "maxlen"),
        (lambda: Output(ApiFrame, encoding={"image": "gif"}), ValueError, "encoding"),
    ],
)
def test_port_declarations_are_checked(factory, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        factory()


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


def test_sending_the_wrong_type_raises_type_error() -> None:
    class Wrong(Agent):
        readings = Input(ApiReading)
        verdicts = Output(ApiVerdict)

        def on_readings(self, msg: ApiReading) -> None:
            self.verdicts.send(msg)  # type: ignore[arg-type]

    with AgentHarness(Wrong) as h, pytest.raises(TypeError) as info:
        h.feed("readings", ApiReading(value=1))
    assert "'verdicts' carries ApiVerdict" in str(info.value)
    assert "ApiReading" in str(info.value)
    assert h.sent["verdicts"] == []


def test_output_of_an_unstarted_agent_says_so() -> None:
    agent = Judge()
    with pytest.raises(RuntimeError, match="not connected"):
        agent.verdicts.send(ApiVerdict(ok=True))
    assert isinstance(Judge.verdicts, Output)  # class access gives the declaration


def test_key_and_trace_propagate_from_the_input_being_handled() -> None:
    ctx = AgentContext(graph="g", agent="judge", replica=2)
    earlier = Hop(agent="camera", replica=0, in_ns=10, out_ns=20)
    msg = ApiReading(value=50, seq=7, key="part-42", trace=[earlier])
    before = time.time_ns()
    with AgentHarness(Judge, {"limit": 5}, ctx) as h:
        h.feed("readings", msg)
    after = time.time_ns()
    (verdict,) = h.sent["verdicts"]
    assert verdict.key == "part-42"
    assert verdict.trace[0] == earlier
    assert len(verdict.trace) == 2
    hop = verdict.trace[1]
    assert (hop.agent, hop.replica) == ("judge", 2)
    assert before <= hop.in_ns <= hop.out_ns <= after
    # an explicit key is kept; the trace is still inherited
    (alarm,) = h.sent["alarms"]
    assert alarm.key == "explicit"
    assert [t.agent for t in alarm.trace] == ["camera", "judge"]
    # the input message itself is not changed
    assert msg.trace == [earlier]


def test_trace_grows_one_hop_per_agent_along_a_chain() -> None:
    class Relay(Agent):
        readings = Input(ApiReading)
        out = Output(ApiReading)

        def on_readings(self, msg: ApiReading) -> None:
            self.out.send(ApiReading(value=msg.value + 1, seq=msg.seq))

    msgs = [ApiReading(value=0, key="k")]
    for i in range(3):
        with AgentHarness(Relay, context=AgentContext(agent=f"relay{i}")) as h:
            h.feed("readings", msgs)
        msgs = h.sent["out"]
    (last,) = msgs
    assert last.value == 3 and last.key == "k"
    assert [t.agent for t in last.trace] == ["relay0", "relay1", "relay2"]
    assert all(a.out_ns <= b.in_ns for a, b in zip(last.trace, last.trace[1:], strict=False))


def test_sending_one_message_object_twice_stamps_each_copy_once() -> None:
    class Twice(Agent):
        readings = Input(ApiReading)
        a = Output(ApiReading)
        b = Output(ApiReading)

        def on_readings(self, msg: ApiReading) -> None:
            out = ApiReading(value=msg.value)
            self.a.send(out)
            self.b.send(out)

    with AgentHarness(Twice, context=AgentContext(agent="twice")) as h:
        h.feed("readings", ApiReading(value=1, key="k"))
    assert [t.agent for t in h.sent["a"][0].trace] == ["twice"]
    assert [t.agent for t in h.sent["b"][0].trace] == ["twice"]


def test_batching_in_the_harness() -> None:
    with AgentHarness(Batcher) as h:
        h.feed("readings", [ApiReading(value=i, key=f"k{i}") for i in range(7)])
        h.feed("readings", ApiReading(value=100))
    assert h.agent.sizes == [3, 3, 1, 1]
    assert [m.value for m in h.sent["sums"]] == [0 + 1 + 2, 3 + 4 + 5, 6, 100]
    # a batch has no single input to inherit from: no key, one hop
    assert all(m.key == "" and len(m.trace) == 1 for m in h.sent["sums"])


def test_batch_handler_receives_decoded_messages_of_the_port_type() -> None:
    seen: list[type] = []

    class Kinds(Agent):
        readings = Input(ApiReading, batch=2)

        def on_readings(self, msgs: list[ApiReading]) -> None:
            seen.extend(type(m) for m in msgs)

    with AgentHarness(Kinds) as h:
        h.feed("readings", [ApiReading(value=1), ApiHotReading(value=2)])
    assert seen == [ApiReading, ApiHotReading]


def test_source_agent_stamps_its_own_hop() -> None:
    h = AgentHarness(Ticker, {"count": 3}, AgentContext(agent="ticker"))
    with h:
        worker = threading.Thread(target=h.agent.run)
        worker.start()
        deadline = time.monotonic() + 5
        while len(h.sent["out"]) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        h.agent.stop()
        worker.join(5)
    assert not worker.is_alive()
    assert [m.key for m in h.sent["out"]] == ["t0", "t1", "t2"]
    for m in h.sent["out"]:
        (hop,) = m.trace
        assert hop.agent == "ticker" and hop.in_ns == m.ts_ns <= hop.out_ns


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


def test_context_defaults_and_paths(tmp_path) -> None:
    agent = Judge()
    assert agent.context.agent == "judge"
    assert agent.context.consumer == "judge-0"
    with pytest.raises(RuntimeError, match="without a broker"):
        agent.context.redis()
    ctx = AgentContext(graph="g", agent="cam", replica=1, graph_dir=tmp_path)
    assert ctx.consumer == "cam-1"
    assert ctx.resolve_path("models/m.onnx") == tmp_path / "models" / "m.onnx"
    assert ctx.resolve_path("/abs/m.onnx").as_posix() == "/abs/m.onnx"


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


def test_message_envelope_and_type_names() -> None:
    a, b = ApiReading(value=1), ApiReading(value=1)
    assert a.id != b.id
    assert a.ts_ns <= b.ts_ns
    assert (a.key, a.trace) == ("", [])
    assert ApiReading.type_name == "ApiReading" and ApiReading.type_label() == "ApiReading/v1"
    assert ApiFrame.array_fields == frozenset({"image"})
    assert ApiReading.scalar_fields == frozenset({"value", "seq"})
    assert ApiHotReading.scalar_fields == frozenset({"value", "seq", "alarm"})
    with pytest.raises(ValidationError):
        ApiReading(value=1, unknown=2)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Hop(agent="a", in_ns=1, out_ns=2).agent = "b"  # type: ignore[misc]
