"""Issue 10 item 2: per-replica log files, log levels, a quiet console, crashes in brief.

Real `procgraph run` processes on a real embedded broker; the files are read back as written.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pgtest_procs import Run
from procgraph.console import Console
from procgraph.linelogs import LineLogs, parse_record
from procgraph.logfiles import LogFiles, files_of, parse_lines
from procgraph.runtime.logs import WIRE_PREFIX, brief_traceback

LOUD_AGENT = '''
from procgraph import Agent, Input, Message, Output


class Item(Message):
    n: int


class Source(Agent):
    items = Output(Item)

    def run(self) -> None:
        self.log.debug("debug from the source")
        self.log.info("info from the source")
        self.log.warning("warning from the source")
        print("a raw print from the source", flush=True)
        for n in range(3):
            self.items.send(Item(n=n))
        while self.sleep(0.2):
            pass


def divide(n: int) -> float:
    return 1 / (n - n)


class Crasher(Agent):
    items = Input(Item)

    def on_items(self, msg: Item) -> None:
        self.log.info("info from the crasher")
        divide(msg.n)


class BadSetup(Agent):
    def setup(self) -> None:
        raise RuntimeError("cannot open the camera: no such device")

    def run(self) -> None:
        pass
'''


def _graph(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "loud.py").write_text(LOUD_AGENT)
    graph = tmp_path / "loud.yaml"
    graph.write_text(textwrap.dedent(f"""\
        name: loud
        agents:
          source:
            class: loud:Source
            log_level: debug
          crasher:
            class: loud:Crasher
            max_deliveries: 1
            inputs: {{items: source.items}}
          bad:
            class: loud:BadSetup
            restart: never
        {extra}"""))
    return graph


def _records(folder: Path, source: str) -> list:
    [(name, paths)] = files_of(folder, source)
    assert name == source
    out = []
    for path in paths:
        out += list(parse_lines(path.read_text().splitlines()))
    return out


def test_files_levels_console_and_crash_brief(tmp_path: Path) -> None:
    """Every record goes to its replica's file with time, level and source; the console
    shows WARNING and above, raw output, and a crash as its user frames + where the rest is."""
    graph = _graph(tmp_path)
    state = tmp_path / "state"
    run = Run(graph, "--duration", "30", state_dir=state)
    try:
        run.wait_line(r"ready in [\d.]+s: line 'loud'", 30)
        run.wait_line(r"crasher\[0\] \| .*full traceback: procgraph logs loud crasher", 20)
        run.wait_line(r"bad\[0\] \| CRITICAL bad\[0\] crashed: RuntimeError: cannot open", 20)
        run.wait_line(r"supervisor \| bad\[0\] exited with code 1; not restarting", 20)
    finally:
        run.ctrl_c()
        assert run.finish() == 0
    out = run.output
    folder = state / "logs"
    # the console: warnings, raw output, the brief; no info or debug of the agents
    assert "source[0] | WARNING warning from the source" in out
    assert "source[0] | a raw print from the source" in out
    assert "info from the source" not in out and "debug from the source" not in out
    assert "info from the crasher" not in out
    assert "loud.py:" in out and "in divide: return 1 / (n - n)" in out
    assert "ZeroDivisionError: division by zero" in out
    assert "loud.py:" in out and "in setup: raise RuntimeError" in out
    assert out.count("Traceback (most recent call last)") == 0  # the whole one is in the file
    assert "procgraph/runtime" not in out and "procgraph/delivery" not in out
    # the files: everything, with time, level and source; tracebacks whole
    source = _records(folder, "source[0]")
    levels = {(r.level, r.text.split(": ", 1)[-1]) for r in source}
    assert ("DEBUG", "debug from the source") in levels  # its own log_level: debug
    assert ("INFO", "info from the source") in levels
    assert ("OUTPUT", "a raw print from the source") in levels
    assert all(r.source == "source[0]" and r.ts > 0 for r in source)
    crasher = _records(folder, "crasher[0]")
    assert any(r.level == "INFO" and r.text.endswith("info from the crasher") for r in crasher)
    failed = [r for r in crasher if r.more]
    assert failed, crasher
    whole = "\n".join(failed[0].more)
    assert "Traceback (most recent call last):" in whole
    assert "procgraph/runtime/consume.py" in whole  # the framework frames are kept here
    assert "ZeroDivisionError" in whole
    bad = _records(folder, "bad[0]")
    assert any(r.level == "CRITICAL" and "crashed: RuntimeError" in r.text for r in bad)
    supervisor = _records(folder, "supervisor")
    assert any("ready in" in r.text for r in supervisor)
    assert any("bad[0] exited with code 1" in r.text for r in supervisor)


def test_log_level_option_and_console_level(tmp_path: Path) -> None:
    """--log-level warning keeps info out of the files; --console-level info shows it."""
    graph = _graph(tmp_path)
    state = tmp_path / "state"
    run = Run(graph, "--duration", "30", "--log-level", "warning", "--console-level", "info",
              state_dir=state)
    try:
        run.wait_line(r"crasher\[0\] \| .*full traceback", 30)
    finally:
        run.ctrl_c()
        assert run.finish() == 0
    crasher = _records(state / "logs", "crasher[0]")
    # (the supervisor's own "started (pid N, restart K)" record is in every replica's file)
    assert not any(r.level == "INFO" and not r.text.startswith("procgraph.supervisor:")
                   for r in crasher), crasher
    assert any(r.text.startswith("procgraph.supervisor: started (pid ") for r in crasher)
    # the source's own log_level (debug) wins over --log-level, and info reaches the console
    assert "source[0] | INFO info from the source" in run.output
    assert "source[0] | DEBUG debug from the source" not in run.output  # console: info


def test_bad_levels_are_one_error_line(tmp_path: Path) -> None:
    """A wrong --log-level or graph log_level is named, with the choices."""
    graph = _graph(tmp_path)
    run = Run(graph, "--log-level", "loud")
    assert run.finish() == 1
    assert "error: --log-level 'loud': use one of debug, info, warning, error, critical" \
        in run.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(graph.read_text().replace("log_level: debug", "log_level: verbose"))
    run = Run(bad)
    assert run.finish() == 1
    assert "log_level" in run.output and "Traceback" not in run.output


def test_rotation_caps_each_replica(tmp_path: Path) -> None:
    """A file rotates at max_mb and keeps `keep` older ones: the folder stays bounded."""
    files = LogFiles(tmp_path, max_bytes=8192, keep=2)
    for i in range(2000):
        files.write("cam[0]", "INFO", f"procgraph.cam.0: line {i} " + "x" * 40)
    files.close()
    [(source, paths)] = files_of(tmp_path)
    assert source == "cam[0]"
    assert [p.name for p in paths] == ["cam.0.log.2", "cam.0.log.1", "cam.0.log"]
    assert all(p.stat().st_size <= 8192 for p in paths)
    last = list(parse_lines(paths[-1].read_text().splitlines()))[-1]
    assert last.text.endswith("line 1999 " + "x" * 40)


def test_hostile_records_cannot_forge_lines(tmp_path: Path) -> None:
    """A record's text with newlines or escapes stays one line; a forged @pg line with the
    wrong shape is filed as raw output; nothing raises."""
    out = tmp_path / "console.txt"
    with out.open("w") as fh:
        logs = LineLogs(Console(fh, colour=False), LogFiles(tmp_path / "logs"), "g")
        forged = {"ts": 1.0, "level": "ERROR", "logger": "procgraph.x",
                  "msg": "a\n2026-01-01T00:00:00.000+00:00 ERROR supervisor: forged\x1b[2J"}
        logs.replica_line("x[0]", "x", WIRE_PREFIX + json.dumps(forged))
        logs.replica_line("x[0]", "x", WIRE_PREFIX + '{"ts": "now", "level": 3}')
        logs.replica_line("x[0]", "x", WIRE_PREFIX + "[1, 2]")
        logs.replica_line("x[0]", "x", WIRE_PREFIX + '{"ts":1,"level":"ERROR","logger":"l",'
                          '"msg":"m","brief":[1]}')
        logs.close()
    records = _records(tmp_path / "logs", "x[0]")
    assert len(records) == 4
    assert records[0].level == "ERROR" and "\\n2026" in records[0].text
    assert "\x1b" not in (tmp_path / "logs" / "x.0.log").read_text()
    assert [r.level for r in records[1:]] == ["OUTPUT"] * 3
    assert len(out.read_text().splitlines()) == 4
    assert parse_record("plain text") is None


def _user_code() -> None:
    import json as library

    library.loads("{")


def test_brief_traceback_points_at_user_code() -> None:
    """The brief names the last user frame and where it raised, then the exception."""
    try:
        _user_code()
    except ValueError as exc:
        brief = brief_traceback(exc)
    assert any("test_line_logs.py" in line and "in _user_code" in line for line in brief)
    assert brief[-1].startswith("json.decoder.JSONDecodeError") or "JSONDecodeError" in brief[-1]
    assert len(brief) <= 3


@pytest.mark.parametrize("level", ["DEBUG", "info"])
def test_settings_read_the_level(monkeypatch: pytest.MonkeyPatch, level: str) -> None:
    """$PROCGRAPH_LOG_LEVEL is case-insensitive."""
    from procgraph.settings import load_settings

    monkeypatch.setenv("PROCGRAPH_LOG_LEVEL", level)
    assert load_settings().log_level == level.lower()
