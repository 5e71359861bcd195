"""Issue 10 item 4: ``streams``, ``tap`` on a missing stream / ``--json`` / ``--full``,
``pub``, ``info`` and ``record --info``, on a real broker (and a real line for ``streams``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis
from typer.testing import CliRunner

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.cli.main import app
from procgraph.codec import decode, encode
from procgraph.examples import Reading
from procgraph.message import Message
from procgraph.recording import Record, RecordingWriter


class Blob(Message):
    """A message with an array, for the summaries."""

    label: str = ""
    image: np.ndarray | None = None


def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in-process; exit code and stdout+stderr."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_tap_missing_stream_says_so_and_lists_the_line(valkey: EmbeddedBroker) -> None:
    client = redis.Redis.from_url(valkey.url)
    client.xadd("pg:tl:src:out", encode(Reading(value=1.0)))  # type: ignore[arg-type]
    client.xadd("pg:tl:scale:scaled", encode(Reading(value=2.0)))  # type: ignore[arg-type]
    code, out = cli("tap", "pg:tl:src:ot", "--redis", valkey.url, "--count", "1")
    assert code == 1
    assert "error: no stream 'pg:tl:src:ot'" in out
    assert "pg:tl:scale:scaled, pg:tl:src:out" in out
    assert "Traceback" not in out
    code, out = cli("tap", "pg:empty:a:b", "--redis", valkey.url, "--count", "1")
    assert code == 1 and "has no streams on this broker" in out


def test_tap_json_and_full(valkey: EmbeddedBroker) -> None:
    client = redis.Redis.from_url(valkey.url)
    stream = "pg:tj:cam:out"
    image = np.zeros((4, 6), dtype=np.uint8)
    client.xadd(stream, encode(Blob(key="p1", label="x" * 1000, image=image)))  # type: ignore[arg-type]
    code, out = cli("tap", stream, "--redis", valkey.url, "--from-start", "--count", "1",
                    "--json")
    assert code == 0, out
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["type"] == "Blob" and doc["key"] == "p1" and doc["data"]["label"] == "x" * 1000
    assert doc["arrays"]["image"] == {"dtype": "|u1", "shape": [4, 6], "encoding": "raw",
                                      "bytes": 24}
    assert "entry_id" in doc
    code, short = cli("tap", stream, "--redis", valkey.url, "--from-start", "--count", "1")
    assert code == 0 and "x" * 1000 not in short and "cut" in short
    code, full = cli("tap", stream, "--redis", valkey.url, "--from-start", "--count", "1",
                     "--full")
    assert code == 0 and "x" * 1000 in full and "cut" not in full


def test_pub_injects_one_validated_message(valkey: EmbeddedBroker) -> None:
    client = redis.Redis.from_url(valkey.url)
    stream = "pg:tp:src:out"
    client.xadd(stream, encode(Reading(value=0.0)))  # type: ignore[arg-type]
    code, out = cli("pub", stream, "--type", "Reading", "--json", '{"value": 4.5}',
                    "--key", "part-7", "--redis", valkey.url)
    assert code == 0, out
    assert "Reading/v1 key='part-7'" in out
    entries: Any = client.xrange(stream)
    assert len(entries) == 2
    msg = decode(entries[-1][1], Reading)
    assert isinstance(msg, Reading) and msg.value == 4.5 and msg.key == "part-7"
    # by module:Class, with an array given as a nested list
    code, out = cli("pub", stream, "--type", "tests.cli.test_stream_tools:Blob", "--json",
                    '{"image": [[1, 2], [3, 4]]}', "--redis", valkey.url)
    assert code == 0, out
    blob = decode(client.xrange(stream)[-1][1], Blob)  # type: ignore[index]
    assert isinstance(blob, Blob) and blob.image is not None and blob.image.shape == (2, 2)


def test_pub_errors_are_one_line(valkey: EmbeddedBroker) -> None:
    client = redis.Redis.from_url(valkey.url)
    stream = "pg:tpe:src:out"
    client.xadd(stream, encode(Reading(value=0.0)))  # type: ignore[arg-type]
    cases = [
        (["--type", "Nope"], "no message type of that name"),
        (["--type", "Reading", "--json", "{bad"], "--json is not valid JSON"),
        (["--type", "Reading", "--json", '{"value": "high"}'], "value: Input should be"),
        (["--type", "Reading", "--json", '{"colour": 1}'], "colour: Extra inputs"),
        (["--type", "nomodule:X"], "cannot import 'nomodule'"),
    ]
    for args, expected in cases:
        code, out = cli("pub", stream, *args, "--redis", valkey.url)
        assert code == 1 and expected in out and out.startswith("error:"), (args, out)
        assert "Traceback" not in out
    code, out = cli("pub", "pg:tpe:src:missing", "--type", "Reading", "--json",
                    '{"value": 1}', "--redis", valkey.url)
    assert code == 1 and "no stream" in out and "pg:tpe:src:out" in out
    code, out = cli("pub", "pg:tpe:src:new", "--type", "Reading", "--json", '{"value": 1}',
                    "--create", "--redis", valkey.url)
    assert code == 0 and client.xlen("pg:tpe:src:new") == 1
    assert client.xlen(stream) == 1  # nothing written by the failures


LINE = """\
name: tstreams
brokers: {main: {url: embedded}}
agents:
  numbers: {class: "pgtest_agents:Numbers", params: {count: 100000, rate_hz: 100}}
  recorder:
    class: pgtest_agents:Recorder
    params: {poison: [k3]}
    inputs: {items: numbers.out}
"""


def test_streams_of_a_running_line(valkey: EmbeddedBroker,
                                   run_graph: Callable[..., Any]) -> None:
    client = redis.Redis.from_url(valkey.url)
    with run_graph(LINE, redis_url=valkey.url) as sup:
        wait_for(lambda: client.xlen("pg:tstreams:numbers:out:dead") >= 1, 30, "a dead letter")
        code, out = cli("streams", str(sup.plan.file), "--redis", valkey.url,
                        "--interval", "0.5")
        assert code == 0, out
        head, row = out.strip().splitlines()[:2]
        assert head.split() == ["STREAM", "TYPE", "LENGTH", "RATE/s", "GROUPS", "LAG",
                                "PENDING", "DEAD"]
        cols = row.split()
        assert cols[0] == "pg:tstreams:numbers:out" and cols[1] == "Item/v1"
        assert int(cols[2]) > 0 and float(cols[3]) > 20  # ~100/s
        assert cols[4] == "recorder" and int(cols[7]) >= 1
        code, out = cli("streams", "tstreams", "--redis", valkey.url, "--json",
                        "--interval", "0")
        assert code == 0, out
        rows = json.loads(out)
        assert [r["stream"] for r in rows] == ["pg:tstreams:numbers:out"]
        assert rows[0]["groups"] == ["recorder"] and rows[0]["dead_letters"] >= 1
    code, out = cli("streams", "nosuchline", "--redis", valkey.url, "--interval", "0")
    assert code == 1 and "has no streams" in out


def test_info_prints_ports_and_params() -> None:
    code, out = cli("info", "procgraph.examples:Scale")
    assert code == 0, out
    assert "readings: Reading/v1 policy=lossless" in out
    assert "scaled: Reading/v1 maxlen=1000" in out
    assert "factor: number = 2.0" in out
    code, out = cli("info", "procgraph.examples:Scale", "--json")
    data = json.loads(out)
    assert data["params"] == [{"name": "factor", "type": "number", "required": False,
                               "default": 2.0}]
    for bad, expected in (("procgraph.examples", "not an import path"),
                          ("procgraph.examples:Reading", "not an Agent subclass"),
                          ("nomod:X", "cannot import module 'nomod'")):
        code, out = cli("info", bad)
        assert code == 1 and out.startswith("error:") and expected in out, out


def test_record_info_describes_a_file(tmp_path: Path) -> None:
    path = tmp_path / "r.pgrec"
    with RecordingWriter(path, {"streams": ["pg:a:b:c"], "sources": ["g.yaml"]}) as w:
        for n in range(5):
            fields = list(encode(Reading(value=float(n))).items())
            w.write(Record("pg:a:b:c", f"{1000 + n * 500}-0", 1000 + n * 500,
                           [(bytes(k), bytes(v)) for k, v in fields]))
    code, out = cli("record", "--info", str(path))
    assert code == 0, out
    assert "5 entries in 1 stream(s) over 2.0 s" in out
    assert "pg:a:b:c: 5 entries" in out and "Reading/v1 x5" in out and "2.0/s" in out
    code, out = cli("record", "--info", str(path), "--json")
    assert json.loads(out)["streams"]["pg:a:b:c"]["entries"] == 5
    path.write_bytes(path.read_bytes()[:-6])  # no trailer: truncated
    code, out = cli("record", "--info", str(path))
    assert code == 1 and out.startswith("error:"), out
    code, out = cli("record")
    assert code == 1 and "--info FILE" in out
