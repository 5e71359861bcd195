"""OnnxClassifier following ``registry:NAME`` (follow.py): hot swap between batches."""

from __future__ import annotations

import io
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis
from clf_models import constant_model, frame, make_model
from procgraph.agents.classifier import OnnxClassifier
from procgraph.agents.messages import Verdict

from procgraph import AgentContext, codec
from procgraph.brokers import EmbeddedBroker
from procgraph.constants import heartbeat_key, stream_key
from procgraph.registry import ModelRegistry
from procgraph.testing import AgentHarness


def test_follows_registry_between_batches(broker: EmbeddedBroker) -> None:
    reg = ModelRegistry(redis.Redis.from_url(broker.url))
    reg.push("parts", constant_model(-3.0))
    clients: list[redis.Redis] = []

    def factory() -> redis.Redis:
        clients.append(redis.Redis.from_url(broker.url))
        return clients[-1]

    ctx = AgentContext(agent="clf", redis_factory=factory)
    img = np.zeros((16, 16), np.uint8)
    try:
        with AgentHarness(OnnxClassifier, {"model": "registry:parts", "poll_s": 0.1}, ctx) as h:
            h.feed("frames", [frame(img, i) for i in range(8)])
            reg.push("parts", constant_model(3.0))
            n = 8
            deadline = time.monotonic() + 10
            while h.sent["verdicts"][-1].model.version != "2":  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the agent never swapped to version 2"
                h.feed("frames", [frame(img, n + i) for i in range(4)])
                n += 4
            reg.rollback("parts")
            deadline = time.monotonic() + 10
            while h.sent["verdicts"][-1].model.version != "1":  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the agent never rolled back to version 1"
                h.feed("frames", [frame(img, n + i) for i in range(4)])
                n += 4
            assert h.agent.swaps == 2  # type: ignore[attr-defined]
    finally:
        for c in clients:
            c.close()
        reg.close()
    verdicts = h.sent["verdicts"]
    assert [v.key for v in verdicts] == [f"part-{i}" for i in range(n)]
    versions = [v.model.version for v in verdicts]  # type: ignore[attr-defined]
    for i in range(0, n, 4):  # a batch never mixes two models
        assert len(set(versions[i:i + 4])) == 1
    for v in verdicts:
        assert v.defective == (v.model.version == "2")  # type: ignore[attr-defined]


def test_a_version_that_fails_to_load_is_skipped(broker: EmbeddedBroker,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(broker.url)
    reg = ModelRegistry(client)
    reg.push("parts", constant_model(-3.0))
    ctx = AgentContext(agent="clf", redis_factory=lambda: client)
    img = np.zeros((16, 16), np.uint8)
    try:
        with AgentHarness(OnnxClassifier, {"model": "registry:parts", "poll_s": 0.1,
                                           "color": "gray"}, ctx) as h:
            # a colour model (other inputs: new_signature), rejected by a gray agent
            reg.push("parts", make_model(channels=3), new_signature=True)
            deadline = time.monotonic() + 10
            while not any("cannot load model parts v2" in r.getMessage()
                          for r in caplog.records):
                assert time.monotonic() < deadline, "the bad version was never tried"
                time.sleep(0.05)
            h.feed("frames", [frame(img, i) for i in range(4)])
            assert {v.model.version for v in h.sent["verdicts"]} == {"1"}  # type: ignore
            reg.push("parts", constant_model(3.0), new_signature=True)  # gray again
            deadline = time.monotonic() + 10
            while h.sent["verdicts"][-1].model.version != "3":  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the agent never took version 3"
                h.feed("frames", [frame(img, 0)])
            assert h.agent.swaps == 1  # type: ignore[attr-defined]
    finally:
        client.close()


def test_registry_model_missing_is_a_clear_error(broker: EmbeddedBroker) -> None:
    client = redis.Redis.from_url(broker.url)
    ctx = AgentContext(agent="clf", redis_factory=lambda: client)
    try:
        with pytest.raises(RuntimeError, match="procgraph model push nope"), \
                AgentHarness(OnnxClassifier, {"model": "registry:nope"}, ctx):
            pass
    finally:
        client.close()


CAMERA_MODULE = '''
"""A paced source of numbered frames that waits for a go key (test helper)."""
import time

import numpy as np
from procgraph import Agent, Output
from procgraph.agents.messages import Frame


class GatedCamera(Agent):
    class Params(Agent.Params):
        count: int = 100
        rate_hz: float = 100.0
        go_key: str = "test:go"

    frames = Output(Frame)

    def run(self) -> None:
        client = self.context.redis()
        while self.running and not client.exists(self.params.go_key):
            self.sleep(0.05)
        next_at = time.monotonic()
        for n in range(self.params.count):
            if not self.running:
                return
            image = np.full((24, 24), n % 256, np.uint8)
            self.frames.send(Frame(key=f"p{n}", camera="cam", seq=n,
                                   capture_ns=time.time_ns(), image=image,
                                   pixel_format="Mono8"))
            next_at += 1.0 / self.params.rate_hz
            self.sleep(next_at - time.monotonic())
        while self.running:
            self.sleep(0.2)
'''


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``cond`` until it holds; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow
def test_hot_swap_under_load_in_a_real_graph(valkey: EmbeddedBroker, tmp_path: Path) -> None:
    from procgraph.graph import load_graph
    from procgraph.supervisor import Supervisor

    client = redis.Redis.from_url(valkey.url)
    count = 800
    (tmp_path / "swap_test_camera.py").write_text(CAMERA_MODULE)
    (tmp_path / "graph.yaml").write_text(textwrap.dedent(f"""\
        name: swaptest
        brokers:
          main: {{url: "{valkey.url}"}}
        agents:
          cam:
            class: "swap_test_camera:GatedCamera"
            params: {{count: {count}, rate_hz: 200}}
            # a small cap: the lossless writer trims and checks room many times meanwhile
            outputs: {{frames: {{maxlen: 64}}}}
          clf:
            class: "procgraph.agents.classifier:OnnxClassifier"
            params: {{model: "registry:parts", poll_s: 0.5}}
            inputs: {{frames: {{from: cam.frames, batch: 4, max_wait_ms: 5}}}}
            outputs: {{verdicts: {{maxlen: 100000}}}}
        """))
    reg = ModelRegistry(client)
    reg.push("parts", constant_model(-4.0))  # v1 says ok to everything
    out = io.StringIO()
    sup = Supervisor(load_graph(tmp_path / "graph.yaml"), out=out, colour=False,
                     console_level="info")  # the swap is an info line
    thread = threading.Thread(target=sup.run, name="supervisor", daemon=True)
    verdict_stream = stream_key("swaptest", "clf", "verdicts")
    thread.start()
    try:
        wait_for(lambda: client.exists(heartbeat_key("swaptest", "clf", 0)) > 0, 20,
                 f"the classifier to start\n{out.getvalue()}")
        client.set("test:go", 1)
        wait_for(lambda: client.xlen(verdict_stream) >= 100, 20, "the first verdicts")
        pushed = reg.push("parts", constant_model(4.0))  # v2 says defective to everything
        wait_for(lambda: client.xlen(verdict_stream) >= count, 30,
                 f"all verdicts\n{out.getvalue()}")
    finally:
        sup.stopping.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    verdicts = [codec.decode(fields, Verdict) for _, fields in client.xrange(verdict_stream)]
    keys = Counter(v.key for v in verdicts)
    missing = sorted({f"p{n}" for n in range(count)} - set(keys), key=lambda k: int(k[1:]))
    twice = sorted(k for k, c in keys.items() if c > 1)
    assert not missing and not twice, (
        f"{len(missing)} frame(s) without a verdict: {missing[:10]}; {len(twice)} with "
        f"several: {twice[:10]}; {len(verdicts)} verdicts\n{out.getvalue()}")
    versions = [v.model.version for v in verdicts]  # type: ignore[attr-defined]
    first_v2 = versions.index(pushed.version)
    assert 100 <= first_v2 < count, "the swap did not happen mid-stream"
    assert set(versions[:first_v2]) == {"1"} and set(versions[first_v2:]) == {"2"}
    for v in verdicts:
        assert isinstance(v, Verdict)
        assert v.defective == (v.model.version == "2"), "verdict names the wrong model"
        assert v.model.sha256 == reg.record("parts", v.model.version).sha256
        assert [h.agent for h in v.trace] == ["cam", "clf"]
    assert "swapped model parts: v1" in out.getvalue()
    client.close()
