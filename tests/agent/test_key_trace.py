"""procgraph.binding: the key and trace rule, for single and batch handlers and sources."""

from __future__ import annotations

import threading
import time

from pgtest_api_agents import ApiReading, ApiVerdict, Batcher, Judge, Ticker

from procgraph import Agent, AgentContext, Input, Output
from procgraph.message import Hop
from procgraph.testing import AgentHarness


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
    # a batch of three: no input in hand to inherit from (keyless output): no key, one hop;
    # a batch of one: its only input is in hand, so its key is inherited
    assert [m.key for m in h.sent["sums"]] == ["", "", "k6", ""]
    assert all(len(m.trace) == 1 for m in h.sent["sums"])


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


class Classify(Agent):
    """A batch handler that sends one output per input, keyed like it (as the classifier)."""

    frames = Input(ApiReading, batch=4)
    verdicts = Output(ApiVerdict)
    summary = Output(ApiReading)

    def on_frames(self, msgs: list[ApiReading]) -> None:
        for m in reversed(msgs):  # the order does not matter: the key does
            self.verdicts.send(ApiVerdict(ok=m.value > 0, source_seq=m.seq, key=m.key))
        self.summary.send(ApiReading(value=len(msgs), key="unknown-key"))


def test_batch_outputs_inherit_from_the_input_with_their_key() -> None:
    hops = {f"p{i}": Hop(agent="camera", replica=i, in_ns=i, out_ns=i + 1) for i in range(3)}
    msgs = [ApiReading(value=i, seq=i, key=k, trace=[hop]) for i, (k, hop) in
            enumerate(hops.items())]
    with AgentHarness(Classify, context=AgentContext(agent="clf")) as h:
        h.feed("frames", msgs)
    by_key = {v.key: v for v in h.sent["verdicts"]}
    assert set(by_key) == set(hops)
    for key, verdict in by_key.items():
        assert verdict.trace[0] == hops[key]  # its own frame's trace, not another's
        assert [t.agent for t in verdict.trace] == ["camera", "clf"]
        assert verdict.source_seq == int(key[1:])
    # an output whose key matches no input of a batch of several starts a new trace
    (summary,) = h.sent["summary"]
    assert summary.key == "unknown-key" and [t.agent for t in summary.trace] == ["clf"]


def test_a_batch_of_one_is_handled_like_a_single_input() -> None:
    earlier = Hop(agent="camera", in_ns=1, out_ns=2)
    with AgentHarness(Classify, context=AgentContext(agent="clf")) as h:
        h.feed("frames", [ApiReading(value=1, key="only", trace=[earlier])])
    (summary,) = h.sent["summary"]
    # the one input in hand: its trace is inherited, the output's own key is kept
    assert summary.key == "unknown-key"
    assert summary.trace[0] == earlier and len(summary.trace) == 2


def test_batch_hops_carry_each_input_read_time() -> None:
    from procgraph.binding import AgentBinding

    agent = Classify(context=AgentContext(agent="clf"))
    binding: AgentBinding = agent.binding
    sent: list[ApiVerdict] = []
    binding.bind_outputs(lambda port, m: sent.append(m) if port == "verdicts" else None)
    msgs = [ApiReading(value=1, key="a"), ApiReading(value=2, key="b")]
    binding.handle("frames", msgs, [111, 222])
    assert {v.key: v.trace[-1].in_ns for v in sent} == {"a": 111, "b": 222}
