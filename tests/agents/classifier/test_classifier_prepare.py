"""The classifier in the real consume loop (real broker): frames are pre-processed by its
``prepare_frames`` hook, ahead of inference under a backlog; a frame its ``roi`` does not fit
is dead-lettered at once (no retries) and every other frame gets exactly one verdict, in
order, with the same scores as the harness gives."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import redis
from clf_models import frame, make_model
from procgraph.agents.classifier import OnnxClassifier
from procgraph.agents.messages import Verdict

from pgtest_util import wait_for
from procgraph import codec
from procgraph.graph import load_graph
from procgraph.runtime import AgentRunner
from procgraph.testing import run_agent

SOURCE = '''
from procgraph import Agent, Output
from procgraph.agents.messages import Frame


class Fed(Agent):
    """Stands for the camera; the test writes its stream itself."""

    frames = Output(Frame)

    def run(self) -> None:
        while self.running:
            self.sleep(0.2)
'''


def test_a_frame_the_roi_does_not_fit_is_dead_lettered_and_the_rest_classified(
        valkey, tmp_path: Path) -> None:
    (tmp_path / "gray.onnx").write_bytes(make_model())
    (tmp_path / "prep_source.py").write_text(SOURCE)
    graph = tmp_path / "clf.yaml"
    graph.write_text(
        "name: prep\nbrokers: {main: {url: embedded}}\nagents:\n"
        '  cam: {class: "prep_source:Fed"}\n'
        '  clf: {class: "procgraph.agents.classifier:OnnxClassifier",\n'
        '        params: {model: gray.onnx, roi: [0, 0, 24, 24], intra_op_threads: 1},\n'
        '        inputs: {frames: {from: cam.frames, batch: 4, max_wait_ms: 20, start: "0"}}}\n')
    rng = np.random.default_rng(3)
    frames = [frame(rng.integers(0, 255, (16, 16) if n == 50 else (32, 32), np.uint8), n)
              for n in range(150)]  # frame 50 is smaller than the roi
    client = redis.Redis.from_url(valkey.url)
    for f in frames:
        client.xadd("pg:prep:cam:frames", codec.encode(f))
    runner = AgentRunner(load_graph(graph), "clf", 0, {"main": valkey.url})
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: client.xlen("pg:prep:clf:verdicts") == 149, 60, "149 verdicts")
        wait_for(lambda: client.xpending("pg:prep:cam:frames", "clf")["pending"] == 0, 20,
                 "every frame acked")
        assert runner.stats_in["frames"].errors == 0  # never tried in the handler
    finally:
        runner.stop_event.set()
        thread.join(10)
    verdicts = [codec.decode(f, Verdict) for _, f in client.xrange("pg:prep:clf:verdicts")]
    good = [f for f in frames if f.seq != 50]
    assert [v.seq for v in verdicts] == [f.seq for f in good]
    assert [v.key for v in verdicts] == [f.key for f in good]
    dead = client.xrange("pg:prep:cam:frames:dead")
    assert [codec.decode(f, type(frames[0])).seq for _, f in dead] == [50]
    reason = dead[0][1][b"dead:reason"].decode()
    assert reason.startswith("prepare_frames: ValueError: roi [0, 0, 24, 24] lies outside"), reason
    expected = run_agent(OnnxClassifier, {"model": str(tmp_path / "gray.onnx"),
                                          "roi": [0, 0, 24, 24]}, {"frames": good})["verdicts"]
    assert [v.score for v in verdicts] == [v.score for v in expected]  # type: ignore[attr-defined]
