"""Issue 9 item 10: what ``model push`` refuses, how it sends big models, ``rollback --to``."""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from registry_models import garbage_0x08, padded_model, tiny_model
from typer.testing import CliRunner

from procgraph.brokers import EmbeddedBroker
from procgraph.cli.main import app
from procgraph.registry import ModelRegistry, ModelRegistryError, store

runner = CliRunner()


def cli(url: str, *args: str) -> tuple[int, str]:
    """``procgraph model ARGS --redis URL``: exit code and output (stdout and stderr)."""
    result = runner.invoke(app, ["model", *args, "--redis", url])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def small_broker() -> Iterator[EmbeddedBroker]:
    """A valkey whose largest value is 1 MiB (proto-max-bulk-len's minimum)."""
    with EmbeddedBroker() as b:
        client = redis.Redis.from_url(b.url)
        client.config_set("proto-max-bulk-len", "1mb")
        assert client.config_get("proto-max-bulk-len")["proto-max-bulk-len"] == str(1024**2)
        client.close()
        yield b


def test_item10_garbage_starting_with_0x08_is_refused(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9 item 10: 4 KiB of bytes starting with 0x08 is not registered, with or
    without the ``onnx`` package (the default install has only onnxruntime)."""
    client = redis.Redis.from_url(broker.url)
    for without_onnx in (False, True):
        if without_onnx:
            monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails
        for i, data in enumerate(garbage_0x08(4096)):
            path = tmp_path / f"garbage{i}.onnx"
            path.write_bytes(data)
            code, out = cli(broker.url, "push", "parts", str(path))
            assert code == 1, out
            assert out.startswith("error: push parts: ") and out.count("\n") == 1, out
            assert "not an ONNX model" in out or "cannot be loaded by onnxruntime" in out
            assert "Traceback" not in out
    assert client.keys("*") == []  # nothing stored, not even a partial upload
    client.close()


def test_item10_model_over_the_broker_limit_is_refused_at_once(
    small_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Issue 9 item 10: a model larger than the broker's proto-max-bulk-len fails fast
    with one clear error (it used to be resent forever) and stores nothing."""
    client = redis.Redis.from_url(small_broker.url)
    client.flushall()
    big = padded_model(0.1, 1024**2 + 4096)
    (tmp_path / "big.onnx").write_bytes(big)
    t0 = time.monotonic()
    code, out = cli(small_broker.url, "push", "parts", str(tmp_path / "big.onnx"))
    assert time.monotonic() - t0 < 10
    assert code == 1 and "Traceback" not in out, out
    assert "1.0 MiB this broker takes in one value (its proto-max-bulk-len)" in out, out
    reg = ModelRegistry(client)
    with pytest.raises(ModelRegistryError, match="proto-max-bulk-len"):
        reg.push("parts", big)
    assert client.keys("*") == []
    client.close()


def test_item10_long_push_goes_in_chunks_with_progress(
    small_broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9 item 10: a big push is sent in chunks with a bytes-sent line per chunk
    (throttled), and the stored bytes are exactly the file's."""
    client = redis.Redis.from_url(small_broker.url)
    client.flushall()
    monkeypatch.setattr(store, "CHUNK_BYTES", 64 * 1024)
    model = padded_model(0.3, 900 * 1024)
    (tmp_path / "m.onnx").write_bytes(model)
    code, out = cli(small_broker.url, "push", "parts", str(tmp_path / "m.onnx"))
    assert code == 0, out
    assert "parts: 64.0 KiB of 900.0 KiB sent (7%)" in out, out
    assert "parts: 900.0 KiB of 900.0 KiB sent (100%)" in out, out
    reg = ModelRegistry(client)
    seen: list[tuple[int, int]] = []
    reg.push("parts", model, progress=lambda sent, total: seen.append((sent, total)))
    assert len(seen) == 15 and seen[-1] == (len(model), len(model))
    assert reg.fetch("parts", "1") == reg.fetch("parts", "2") == model
    assert [k for k in client.keys("*") if b":upload:" in k] == []
    client.close()


def test_item10_push_checks_signature_and_the_agent(broker: EmbeddedBroker,
                                                    tmp_path: Path) -> None:
    """Issue 9 item 10: a model whose inputs differ from the current version's, or that the
    classifier of a graph cannot run, is refused before it becomes current."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "agents" / "classifier"))
    try:
        from clf_models import make_model
    finally:
        sys.path.pop(0)
    gray, colour = tmp_path / "gray.onnx", tmp_path / "colour.onnx"
    gray.write_bytes(make_model(channels=1))
    colour.write_bytes(make_model(channels=3))
    (tmp_path / "g.yaml").write_text(textwrap.dedent(f"""\
        name: line
        brokers: {{main: {{url: "{broker.url}"}}}}
        agents:
          cam: {{class: "procgraph.agents.camera:SyntheticPartCamera"}}
          clf:
            class: "procgraph.agents.classifier:OnnxClassifier"
            inputs: {{frames: cam.frames}}
            params: {{model: "registry:parts", color: gray}}
        """))
    graph = str(tmp_path / "g.yaml")
    assert cli(broker.url, "push", "parts", str(gray), "--graph", graph)[0] == 0
    code, out = cli(broker.url, "push", "parts", str(colour))
    assert code == 1 and "not 'image' [?, 1, 16, 16] tensor(float)" in out, out
    assert "--new-signature" in out
    code, out = cli(broker.url, "push", "parts", str(colour), "--new-signature",
                    "--graph", graph)
    assert code == 1 and "does not suit its agent: agent 'clf'" in out, out
    assert "color 'gray' gives 1 channel(s)" in out
    code, out = cli(broker.url, "push", "parts", str(colour), "--new-signature",
                    "--graph", graph, "--agent", "nope")
    assert code == 1 and "no agent 'nope'" in out
    assert cli(broker.url, "push", "parts", str(colour), "--new-signature")[0] == 0
    assert ModelRegistry(redis.Redis.from_url(broker.url)).versions("parts") == ["1", "2"]


def test_item10_rollback_to_a_version(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Issue 9 item 10: ``model rollback NAME --to VERSION`` goes straight to that version."""
    for i, value in enumerate((0.1, 0.2, 0.3, 0.4)):
        (tmp_path / f"{i}.onnx").write_bytes(tiny_model(value))
        assert cli(broker.url, "push", "parts", str(tmp_path / f"{i}.onnx"))[0] == 0
    code, out = cli(broker.url, "rollback", "parts", "--to", "1")
    assert code == 0 and "parts: version 1 is current again" in out, out
    reg = ModelRegistry(redis.Redis.from_url(broker.url))
    assert reg.current("parts").version == "1"  # type: ignore[union-attr]
    code, out = cli(broker.url, "rollback", "parts", "--to", "3")
    assert code == 0 and "version 3 is current again" in out
    for to, text in (("3", "is current already"), ("9", "has no version '9'; versions: 1, 2")):
        code, out = cli(broker.url, "rollback", "parts", "--to", to)
        assert code == 1 and text in out and "Traceback" not in out, out
    assert reg.rollback("parts").version == "2"  # without --to: the one before
    reg.close()
