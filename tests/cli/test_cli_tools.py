"""Day-one tools: ``top`` on a running graph, ``record``/``replay`` round trips, ``new agent``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker, free_port
from procgraph.cli.main import app
from procgraph.recording import FORMAT_VERSION, MAGIC, Record, RecordingWriter, read_all

runner = CliRunner()

LINE = """\
name: tools
brokers:
  main: {url: embedded}
agents:
  numbers:
    class: pgtest_agents:Numbers
    params: {count: 100000, rate_hz: 200, payload_bytes: 8}
  doubler:
    class: pgtest_agents:Doubler
    inputs: {items: numbers.out}
  recorder:
    class: pgtest_agents:Recorder
    params: {poison: [k3]}
    inputs: {items: doubler.out}
"""


def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in-process; return the exit code and stdout+stderr."""
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCGRAPH_")}
    env.pop("PYTEST_ADDOPTS", None)
    return env


def procgraph(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in its own process."""
    return subprocess.run([sys.executable, "-m", "procgraph", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


# -- top ---------------------------------------------------------------------------------------
def _row(out: str, agent: str) -> list[str]:
    line = next((ln for ln in out.splitlines() if ln.split()[:1] == [agent]), "")
    return line.split()


def test_top_once_shows_every_agent_with_traffic(
        valkey: EmbeddedBroker, run_graph: Callable[..., object], tmp_path: Path) -> None:
    with run_graph(LINE, redis_url=valkey.url):  # type: ignore[attr-defined]
        graph = str(tmp_path / "graph.yaml")

        def all_alive_and_counted() -> str | None:
            code, out = cli("top", graph, "--redis", valkey.url, "--once")
            assert code == 0, out
            found = re.search(r"^\s*recorder .*in:items\s+([\d,]+)\s", out, re.M)
            alive = all(_row(out, a)[1:2] == ["1/1"] for a in ("numbers", "doubler", "recorder"))
            dead = _row(out, "recorder")[8:9] == ["1"]  # k3 always fails: dead-lettered
            sent = re.search(r"out:out\s+[\d,]*[1-9]", out)  # a heartbeat after a send
            return out if alive and dead and sent and found and \
                int(found.group(1).replace(",", "")) > 0 else None

        out = wait_for(all_alive_and_counted,
                       what="top to show every replica alive, items handled, one dead")
    assert re.search(r"out:out\s+[\d,]*[1-9]", out), out  # numbers has sent something
    assert all(column in out for column in ("msg/s", "lag", "pend", "dead", "p50ms", "blk s"))


def test_top_unreachable_broker_exits_1(tmp_path: Path) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text("name: offline\nagents:\n  counter: {class: 'procgraph.examples:Counter'}\n")
    url = f"redis://127.0.0.1:{free_port()}"
    code, out = cli("top", str(graph), "--redis", url, "--once")
    assert code == 1
    assert "cannot reach broker 'main'" in out and url in out


# -- record / replay ---------------------------------------------------------------------------
def _by_stream(records: list[Record]) -> dict[str, list[list[tuple[bytes, bytes]]]]:
    out: dict[str, list[list[tuple[bytes, bytes]]]] = {}
    for r in records:
        out.setdefault(r.stream, []).append(r.fields)
    return out


def test_record_then_replay_into_a_fresh_broker(
        valkey: EmbeddedBroker, run_graph: Callable[..., object], tmp_path: Path) -> None:
    client = redis.Redis.from_url(valkey.url)
    rec = tmp_path / "line.pgrec"
    with run_graph(LINE, redis_url=valkey.url):  # type: ignore[attr-defined]
        wait_for(lambda: int(client.get("pgtest:recorder:handled") or 0) > 5,
                 what="traffic on the line")
        code, out = cli("record", str(tmp_path / "graph.yaml"), "--redis", valkey.url,
                        "--out", str(rec), "--count", "60")
        assert code == 0, out
        assert "recorded 60 entries of 2 stream(s)" in out
        header, records = read_all(rec)
        assert len(records) == 60
        assert set(header["streams"]) == {"pg:tools:numbers:out", "pg:tools:doubler:out"}
        for r in records:  # byte-identical to what is in the broker, field order kept
            [(_, fields)] = client.xrange(r.stream, r.entry_id, r.entry_id)
            assert list(fields.items()) == r.fields
    client.flushall()
    code, out = cli("replay", str(rec), "--redis", valkey.url, "--as-fast-as-possible")
    assert code == 0, out
    assert "replayed 60 entries" in out
    for stream, entries in _by_stream(records).items():
        assert [list(f.items()) for _, f in client.xrange(stream)] == entries
    assert client.dbsize() == len(_by_stream(records))
    code, out = cli("replay", str(rec), "--redis", valkey.url, "--as-fast-as-possible",
                    "--stream-prefix", "copy:")
    assert code == 0, out
    for stream, entries in _by_stream(records).items():
        assert [list(f.items()) for _, f in client.xrange("copy:" + stream)] == entries


def _synthetic(path: Path, gaps_ms: list[int]) -> list[Record]:
    records, ts = [], 1_700_000_000_000
    for i, gap in enumerate([0, *gaps_ms]):
        ts += gap
        records.append(Record("s:one", f"{ts}-0", ts, [(b"h", b'{"n":%d}' % i),
                                                       (b"a:x", bytes([0, 255, i]))]))
    with RecordingWriter(path, {"streams": ["s:one"]}) as writer:
        for r in records:
            writer.write(r)
    return records


def test_replay_keeps_the_timing_scaled_by_speed(valkey: EmbeddedBroker, tmp_path: Path) -> None:
    path = tmp_path / "timed.pgrec"
    _synthetic(path, [600, 600])  # 1.2 s recorded
    started = time.monotonic()
    code, out = cli("replay", str(path), "--redis", valkey.url, "--speed", "2")
    took = time.monotonic() - started
    assert code == 0, out
    assert 0.45 <= took < 10, took  # ~0.6 s at speed 2; generous upper bound
    fast = tmp_path / "slow.pgrec"
    _synthetic(fast, [30_000])  # 30 s recorded
    started = time.monotonic()
    code, out = cli("replay", str(fast), "--redis", valkey.url, "--as-fast-as-possible")
    assert code == 0, out
    assert time.monotonic() - started < 10
    assert redis.Redis.from_url(valkey.url).xlen("s:one") == 5


@pytest.mark.parametrize(("damage", "message"), [
    (lambda b: b[:-7], "truncated"),
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b"NOTPG" + b[5:], "not a procgraph recording"),
    (lambda b: MAGIC + bytes([FORMAT_VERSION + 1]) + b[6:], "version 2 is not supported"),
    (lambda b: b[:-30] + bytes([b[-30] ^ 0xFF]) + b[-29:], "checksum"),
])
def test_replay_refuses_damaged_files(valkey: EmbeddedBroker, tmp_path: Path,
                                      damage: Callable[[bytes], bytes], message: str) -> None:
    good = tmp_path / "good.pgrec"
    _synthetic(good, [1, 1, 1, 1])
    bad = tmp_path / "bad.pgrec"
    bad.write_bytes(damage(good.read_bytes()))
    code, out = cli("replay", str(bad), "--redis", valkey.url)
    assert code == 1
    assert message in out, out
    assert redis.Redis.from_url(valkey.url).dbsize() == 0  # checked before writing anything


# -- new agent ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "source", "module"), [
    ("defect-filter", False, "defect_filter"),
    ("VibrationSensor", True, "vibration_sensor"),
])
def test_new_agent_validates_tests_and_runs(tmp_path: Path, name: str, source: bool,
                                            module: str) -> None:
    proj = tmp_path / "proj"
    code, out = cli("new", "agent", name, "--dir", str(proj), *(["--source"] if source else []))
    assert code == 0, out
    assert sorted(p.name for p in proj.iterdir()) == sorted(
        [f"{module}.py", f"test_{module}.py", f"{module}.yaml"])
    done = procgraph("validate", f"{module}.yaml", cwd=proj)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"test_{module}.py"], cwd=proj, env=_env(), capture_output=True,
                           text=True, timeout=60)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "1 passed" in tests.stdout
    ran = procgraph("run", f"{module}.yaml", "--duration", "6", cwd=proj)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stdout
    # the console shows warnings and up; the replica's file has all it logged
    from procgraph.graph import load_graph
    from procgraph.logfiles import log_dir, parse_lines

    logged = log_dir(load_graph(proj / f"{module}.yaml")) / f"{module}.0.log"
    assert logged.is_file(), ran.stdout
    records = list(parse_lines(logged.read_text().splitlines()))
    assert records and all(r.source == f"{module}[0]" for r in records), records


def test_new_agent_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    (tmp_path / "test_my_agent.py").write_text("# mine\n")
    code, out = cli("new", "agent", "my_agent", "--dir", str(tmp_path))
    assert code == 1
    assert "not overwriting" in out and "test_my_agent.py" in out
    assert (tmp_path / "test_my_agent.py").read_text() == "# mine\n"
    assert not (tmp_path / "my_agent.py").exists()  # nothing half-written
    for bad in ("1st", "class", "json", "my agent"):
        code, out = cli("new", "agent", bad, "--dir", str(tmp_path))
        assert code == 1, bad
        assert "is not valid" in out
