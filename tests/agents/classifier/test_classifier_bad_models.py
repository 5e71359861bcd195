"""Issue 9 items 9 and 10: model files that are no model, a registry whose current version
is garbage."""

from __future__ import annotations

import hashlib
import json
import logging
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from clf_models import constant_model, frame
from procgraph.agents.classifier import OnnxClassifier
from pydantic import ValidationError
from typer.testing import CliRunner

from procgraph import AgentContext
from procgraph.brokers import EmbeddedBroker
from procgraph.cli.main import app
from procgraph.constants import model_blob_key, model_key, model_versions_key
from procgraph.registry import ModelRegistry
from procgraph.testing import AgentHarness

GRAPH = """\
name: line
brokers: {{main: {{}}}}
agents:
  cam: {{class: "procgraph.agents.camera:SyntheticPartCamera"}}
  clf:
    class: "procgraph.agents.classifier:OnnxClassifier"
    inputs: {{frames: cam.frames}}
    params: {{model: "{model}"}}
"""


def validate(tmp_path: Path, model: str) -> tuple[int, str]:
    """``procgraph validate`` of a line whose classifier has ``model``."""
    graph = tmp_path / "line.yaml"
    graph.write_text(textwrap.dedent(GRAPH.format(model=model)))
    result = CliRunner().invoke(app, ["validate", str(graph)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def test_item09_dev_zero_and_etc_passwd_fail_validate(tmp_path: Path) -> None:
    """Issue 9 item 9: ``model: /dev/zero`` and ``model: /etc/passwd`` are refused by
    ``procgraph validate`` (at once, naming the file), and so is a folder."""
    (tmp_path / "good.onnx").write_bytes(constant_model(0.0))
    cases = (("/dev/zero", "model /dev/zero is a character device, not a regular file"),
             ("/etc/passwd", "model /etc/passwd is not an ONNX model"),
             (str(tmp_path), "is a folder, not a regular file"))
    for model, text in cases:
        t0 = time.monotonic()
        code, out = validate(tmp_path, model)
        assert time.monotonic() - t0 < 10
        assert code == 1 and text in out and "Traceback" not in out, out
        assert "params of agent 'clf'" in out and "line.yaml:" in out
    code, out = validate(tmp_path, str(tmp_path / "good.onnx"))
    assert code == 0, out


def test_item09_setup_refuses_a_file_that_is_no_model(tmp_path: Path) -> None:
    """Issue 9 item 9: the same files at setup (a path relative to the graph is checked
    there): a clear error, never reading /dev/zero until MemoryError."""
    for model in ("/dev/zero", "/etc/passwd"):
        with pytest.raises(ValidationError, match="model /"):
            OnnxClassifier.Params.model_validate({"model": model})
    (tmp_path / "zero.onnx").symlink_to("/dev/zero")
    (tmp_path / "passwd.onnx").write_bytes(Path("/etc/passwd").read_bytes())
    for name in ("zero.onnx", "passwd.onnx"):  # relative: checked with the graph's folder
        with pytest.raises(ValidationError, match=r"zero\.onnx is a character|passwd\.onnx is not"):
            OnnxClassifier.Params.model_validate({"model": name},
                                                 context={"graph_dir": tmp_path})
        OnnxClassifier.Params.model_validate({"model": name})  # without it: at setup
    ctx = AgentContext(agent="clf", graph_dir=tmp_path)
    for name, text in (("zero.onnx", "is a character device"),
                       ("passwd.onnx", "is not an ONNX model")):
        with pytest.raises(RuntimeError, match=text), \
                AgentHarness(OnnxClassifier, {"model": name}, ctx):
            pass


def _store_garbage(client: redis.Redis, name: str, version: str, data: bytes) -> None:
    """Make ``data`` the current version as an old, unchecking push did (or a hand edit)."""
    digest = hashlib.sha256(data).hexdigest()
    meta = json.dumps({"name": name, "version": version, "sha256": digest,
                       "size": len(data), "pushed": time.time()})
    client.set(model_blob_key(name, version), data)
    client.hset(model_key(name), mapping={f"meta:{version}": meta, "current": version})
    client.rpush(model_versions_key(name), version)


def test_item10_garbage_current_version_keeps_the_last_good_one(
    broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 9 item 10: a classifier (re)started while the current version is 4 KiB of
    garbage starting with 0x08 serves the newest version that loads and says so; a good
    push later is taken."""
    client = redis.Redis.from_url(broker.url)
    reg = ModelRegistry(client)
    reg.push("parts", constant_model(-3.0))
    _store_garbage(client, "parts", "2", b"\x08" + b"\x07" * 4095)
    ctx = AgentContext(agent="clf", redis_factory=lambda: client)
    img = np.zeros((16, 16), np.uint8)
    try:
        with caplog.at_level(logging.ERROR), AgentHarness(
                OnnxClassifier, {"model": "registry:parts", "poll_s": 0.1}, ctx) as h:
            h.feed("frames", [frame(img, i) for i in range(4)])
            assert {v.model.version for v in h.sent["verdicts"]} == {"1"}  # type: ignore
            problem = h.agent.model_problem  # type: ignore[attr-defined]
            assert problem is not None and "v2 cannot be loaded" in problem
            assert "serving v1" in problem
            logged = [r.getMessage() for r in caplog.records]
            assert any("model parts v2 (current) cannot be loaded" in m and
                       "procgraph model rollback parts --to 1" in m for m in logged), logged
            reg.push("parts", constant_model(3.0))
            deadline = time.monotonic() + 10
            while h.sent["verdicts"][-1].model.version != "3":  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the agent never took version 3"
                h.feed("frames", [frame(img, 0)])
            assert h.agent.model_problem is None  # type: ignore[attr-defined]
    finally:
        client.close()


def test_item10_no_version_loads_is_a_clear_error(broker: EmbeddedBroker) -> None:
    """Issue 9 item 10: when no version of the model loads, setup says so and what to do."""
    client = redis.Redis.from_url(broker.url)
    _store_garbage(client, "parts", "1", b"\x08" * 4096)
    ctx = AgentContext(agent="clf", redis_factory=lambda: client)
    try:
        with pytest.raises(RuntimeError, match="no older version loads either: push a good"), \
                AgentHarness(OnnxClassifier, {"model": "registry:parts"}, ctx):
            pass
    finally:
        client.close()
