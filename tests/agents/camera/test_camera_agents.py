"""Camera agents in real graphs: a GenICam camera (simulated producer viky.cti) feeding a
classifier, and the synthetic part cameras."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from procgraph.agents.messages import Frame, Verdict

from pgtest_util import wait_for
from procgraph import codec

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "models" / "parts-front.onnx"
needs_model = pytest.mark.skipif(not MODEL.exists(), reason="demo models not built")


def _entries(client: redis.Redis, stream: str, cls: type) -> list:
    return [codec.decode(f, cls) for _, f in client.xrange(stream)]


@needs_model
def test_genicam_camera_to_classifier_verdicts_can_be_tapped(valkey, run_graph):
    client = redis.Redis.from_url(valkey.url)
    graph = (ROOT / "graphs" / "genicam.yaml").read_text().replace(
        "../models/parts-front.onnx", str(MODEL))
    os.environ["FRAME_COUNT"] = "12"
    try:
        with run_graph(graph, redis_url=valkey.url):
            wait_for(lambda: client.xlen("pg:genicam:classify:verdicts") >= 12, 60,
                     "12 verdicts from the viky camera")
            tap = subprocess.run(
                [sys.executable, "-m", "procgraph", "tap", "pg:genicam:classify:verdicts",
                 "--redis", valkey.url, "--from-start", "--count", "3"],
                capture_output=True, text=True, timeout=30)
    finally:
        os.environ.pop("FRAME_COUNT")
    assert tap.returncode == 0, tap.stderr
    lines = tap.stdout.strip().splitlines()
    assert len(lines) == 3 and all("procgraph.Verdict" in line for line in lines), lines
    # the headers only: the pixels went through shared memory, gone with the stopped line
    frames = [codec.read_header(f) for _, f in client.xrange("pg:genicam:camera:frames")]
    assert [f["data"]["seq"] for f in frames[:12]] == list(range(12))
    assert frames[0]["data"]["pixel_format"] == "Mono8"
    image = frames[0]["arrays"]["image"]
    assert image["dtype"] == "|u1" and image["shape"] == [400, 400]
    verdicts = _entries(client, "pg:genicam:classify:verdicts", Verdict)
    assert {v.key for v in verdicts} == {f["key"] for f in frames[:12]}
    assert all(v.camera == "cam1" and v.model.name == "parts-front" for v in verdicts)
    assert all(len(v.model.sha256) == 64 and set(v.scores) == {"ok", "defective"}
               for v in verdicts)


def test_synthetic_cameras_agree_on_parts_and_resume_after_restart(valkey, run_graph):
    client = redis.Redis.from_url(valkey.url)
    graph = """
name: synth
brokers: {main: {url: embedded}}
agents:
  front: {class: "procgraph.agents.camera:SyntheticPartCamera",
          params: {camera: front, view: front, rate_hz: 50, seed: 3, count: 30,
                   defect_rate: 0.5}}
  back: {class: "procgraph.agents.camera:SyntheticPartCamera",
         params: {camera: back, view: back, rate_hz: 50, seed: 3, count: 30,
                  defect_rate: 0.5, channels: 3}}
"""
    with run_graph(graph, redis_url=valkey.url) as sup:
        wait_for(lambda: client.xlen("pg:synth:front:frames") >= 10, 30, "first frames")
        victim = next(r for r in sup.replicas if r.agent.name == "front")
        victim.proc.kill()
        wait_for(lambda: client.xlen("pg:synth:front:frames") >= 30
                 and client.xlen("pg:synth:back:frames") >= 30, 40, "30 parts per camera")
    front = _entries(client, "pg:synth:front:frames", Frame)
    back = _entries(client, "pg:synth:back:frames", Frame)
    # the restarted camera continued: no part key twice, none missing
    assert sorted(f.key for f in front) == sorted(f"part-{i}" for i in range(30))
    assert [f.key for f in back] == [f"part-{i}" for i in range(30)]
    assert front[0].image.shape == (256, 256) and back[0].image.shape == (256, 256, 3)
    assert back[0].pixel_format == "BGR8"
    truths = {f.truth for f in front + back}
    assert "ok" in truths and truths - {"ok"}, truths  # defect_rate 0.5: both kinds
    previews = client.xlen("pg:synth:front:preview")
    assert previews > 0
