"""``procgraph model push|list|rollback`` on a real broker (a thin shell over the registry)."""

from __future__ import annotations

from pathlib import Path

from registry_models import tiny_model
from typer.testing import CliRunner

from procgraph.brokers import EmbeddedBroker, free_port
from procgraph.cli.main import app


def test_model_cli(broker: EmbeddedBroker, tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "a.onnx").write_bytes(tiny_model(0.1))
    (tmp_path / "b.onnx").write_bytes(b"garbage")

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["model", *args, "--redis", broker.url])
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result.exit_code, result.output

    assert run("push", "parts", str(tmp_path / "a.onnx"))[0] == 0
    code, out = run("push", "parts", str(tmp_path / "a.onnx"), "--version", "v2")
    assert code == 0 and "version v2 is current" in out
    code, out = run("list")
    assert code == 0 and "parts" in out and "v2" in out
    code, out = run("rollback", "parts")
    assert code == 0 and "version 1 is current again" in out
    for args, text in ((("push", "parts", str(tmp_path / "b.onnx")), "not an ONNX model"),
                       (("push", "parts", str(tmp_path / "none.onnx")), "no such file"),
                       (("rollback", "parts"), "nothing to roll back"),
                       (("list", "nope"), "no model 'nope'")):
        code, out = run(*args)
        assert code == 1 and text in out and "Traceback" not in out, args
    result = runner.invoke(app, ["model", "list", "--redis", f"redis://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and "cannot reach the broker" in result.output


def test_model_cli_reads_the_broker_url_from_the_environment(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: object
) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("PROCGRAPH_REDIS", broker.url)
    (tmp_path / "a.onnx").write_bytes(tiny_model(0.1))
    result = CliRunner().invoke(app, ["model", "push", "parts", str(tmp_path / "a.onnx")])
    assert result.exit_code == 0 and "version 1 is current" in result.output
