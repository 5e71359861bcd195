"""``procgraph logs`` (issue 10 item 2): files written by procgraph.logfiles (rotated ones
too), filters, errors, ``-f`` through rotation and new replicas, and a real ``procgraph run``."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pgtest_procs import Collected, Run
from pgtest_util import wait_for
from procgraph import runs
from procgraph.cli.logs_cmd import parse_since
from procgraph.cli.main import app
from procgraph.logfiles import LogFiles, log_dir

runner = CliRunner()
#: a record head: date (only for a record of another day), time, source, level, text
LINE = re.compile(r"^(?:\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d\.\d{3} (\S+) +([A-Z]+) +(.*)$")


def _cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["logs", *args])
    return result.exit_code, result.stdout, result.stderr


def _heads(out: str) -> list[tuple[str, str, str]]:
    """(source, level, text) of each printed record head; every other line is indented."""
    heads = []
    for line in out.splitlines():
        m = LINE.match(line)
        assert m or line.startswith("    "), line
        if m:
            heads.append((m.group(1), m.group(2), m.group(3)))
    return heads


def _write_demo(folder: Path, t0: float) -> LogFiles:
    """cam[0] (rotated twice), cam[1], clf[0] with tracebacks, supervisor, interleaved."""
    files = LogFiles(folder, max_bytes=4096, keep=3)
    for i in range(90):
        files.write("cam[0]", "INFO", f"procgraph.cam.0: frame {i:03d} " + "x" * 50, ts=t0 + i)
        if i % 10 == 5:
            files.write("cam[1]", "DEBUG", f"procgraph.cam.1: tick {i:03d}", ts=t0 + i + 0.25)
        if i % 30 == 7:
            files.write("clf[0]", "ERROR", f"procgraph.runtime: handler failed {i:03d}",
                        more=["Traceback (most recent call last):", '  File "clf.py", line 9',
                              "ValueError: bad"], ts=t0 + i + 0.5)
    files.write("supervisor", "WARNING", "procgraph.supervisor: clf[0] restarted", ts=t0 + 40.75)
    files.close()
    return files


def _write_one(folder: Path, source: str, text: str, ts: float | None = None) -> None:
    files = LogFiles(folder)
    files.write(source, "INFO", text, ts=ts)
    files.close()


def test_merges_every_file_by_time_rotated_ones_included() -> None:
    """Every record of every source (rotated files first), in time order, in the format
    HH:MM:SS.mmm source LEVEL text, continuation lines indented under their record."""
    folder = log_dir("demo")
    _write_demo(folder, time.time() - 200)
    assert (folder / "cam.0.log.2").is_file() and (folder / "cam.0.log.1").is_file()
    code, out, err = _cli("demo")
    assert code == 0, err
    heads = _heads(out)
    frames = [t for s, _, t in heads if s == "cam[0]"]
    assert frames == [f"procgraph.cam.0: frame {i:03d} " + "x" * 50 for i in range(90)]
    assert len(heads) == 90 + 9 + 3 + 1
    order = [(s, t.split()[-1]) for s, _, t in heads if s != "cam[0]"]
    assert order[:3] == [("cam[1]", "005"), ("clf[0]", "007"), ("cam[1]", "015")]
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "handler failed 037" in line)
    assert lines[at + 1:at + 4] == ["    Traceback (most recent call last):",
                                    '      File "clf.py", line 9', "    ValueError: bad"]
    assert re.search(r"frame 040 x+\n\S+ supervisor +WARNING +procgraph.supervisor: clf\[0\] "
                     r"restarted\n\S+ cam\[0\] +INFO +procgraph.cam.0: frame 041", out)


def test_source_level_lines_and_since_filters() -> None:
    """AGENT: all its replicas; AGENT[i]: one; supervisor: supervisor and supervisor.<node>;
    --level keeps that level and above; -n the last N; --since a duration or an ISO time."""
    folder = log_dir("demo")
    t0 = time.time() - 200
    _write_demo(folder, t0)
    more = LogFiles(folder)
    more.write("supervisor.n2", "INFO", "procgraph.supervisor: node n2", ts=t0 + 1)
    for k in range(20):  # 205 s .. 15 s ago, 10 s apart: 5 s to spare around --since 2m
        more.write("tick[0]", "INFO", f"tick {k:02d}", ts=t0 - 5 + 10 * k)
    more.close()
    assert {s for s, _, _ in _heads(_cli("demo", "cam")[1])} == {"cam[0]", "cam[1]"}
    assert {s for s, _, _ in _heads(_cli("demo", "cam[1]")[1])} == {"cam[1]"}
    sup = _heads(_cli("demo", "supervisor")[1])
    assert [s for s, _, _ in sup] == ["supervisor.n2", "supervisor"]
    assert {lv for _, lv, _ in _heads(_cli("demo", "--level", "warning")[1])} == {
        "ERROR", "WARNING"}
    last = _heads(_cli("demo", "cam", "-n", "3")[1])
    assert [t.split()[2] for _, _, t in last] == ["087", "088", "089"]
    assert _cli("demo", "-n", "0") == (0, "", "")
    recent = _heads(_cli("demo", "tick", "--since", "2m")[1])  # 115 s ago and later
    assert [t for _, _, t in recent] == [f"tick {k:02d}" for k in range(9, 20)]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0 + 85))
    assert len(_heads(_cli("demo", "cam[0]", "--since", iso)[1])) == 5  # 85 .. 89
    now = 1_800_000_000.0
    assert parse_since("1h30m", now) == now - 5400 and parse_since("30s", now) == now - 30
    assert parse_since("2026-12-01T16:45:00+00:00", now) == 1796143500.0
    with pytest.raises(ValueError):
        parse_since("yesterday", now)


def test_errors_are_one_line_naming_what_to_do(tmp_path: Path) -> None:
    """No logs folder: where it looked and that the line must have run; an unknown source
    lists the sources there; bad --since/--level/-n/source: one error line, exit 1."""
    code, out, err = _cli("nothere")
    assert code == 1 and out == ""
    where = log_dir("nothere")
    assert err.startswith("error: no log folder of graph 'nothere': looked in "
                          f"{where}; the line must have run") and err.count("\n") == 1
    _write_demo(log_dir("demo"), time.time())
    code, _, err = _cli("demo", "cam[7]")
    assert code == 1 and "no log files of 'cam[7]'" in err
    assert "(there: cam[0], cam[1], clf[0], supervisor)" in err
    for args, says in [(["--since", "10x"], "--since '10x': give a duration"),
                       (["--level", "loud"], "--level 'loud': give one of DEBUG, INFO"),
                       (["-n", "-2"], "--lines -2: give 0 or more"),
                       (["cam 0"], "'cam 0' is not AGENT, AGENT[i] or supervisor")]:
        code, out, err = _cli("demo", *args)
        assert (code, out) == (1, ""), (args, err)
        assert err.startswith("error: " + says) and "Traceback" not in err, err
    graph = tmp_path / "demo.yaml"
    graph.write_text("name: demo\nagents:\n  cam: {class: 'procgraph.examples:Counter'}\n")
    code, _, err = _cli(str(graph), "clf")
    assert code == 1 and "graph 'demo' has no agent 'clf' (agents: cam; or supervisor)" in err
    graph.write_text(graph.read_text() + "  idle: {class: 'procgraph.examples:Counter'}\n")
    code, out, err = _cli(str(graph), "idle")  # an agent of the graph that logged nothing
    assert (code, out) == (0, "") and err.startswith("no records of 'idle' in ")
    assert err.rstrip().endswith("it has written nothing yet")
    code, _, err = _cli("demo")
    assert code == 0, err


def test_hostile_text_is_printed_escaped() -> None:
    """A file's line with terminal escapes or a forged record head cannot reach the
    terminal as such: controls are escaped, a foreign line shows as its file's OUTPUT."""
    folder = log_dir("demo")
    folder.mkdir(parents=True)
    (folder / "cam.0.log").write_text(
        "2026-12-01T16:45:02.123+00:00 INFO cam[0] hi \x1b[2J\x07 there\n"
        "not a record \x1b]0;title\x07\n")
    code, out, _ = _cli("demo")
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    assert _heads(out) == [("cam[0]", "INFO", "hi \\x1b[2J\\x07 there"),
                           ("cam[0]", "OUTPUT", "not a record \\x1b]0;title\\x07")]


def test_finds_the_folder_from_graph_file_run_record_and_state_dir(tmp_path: Path) -> None:
    """A graph file with logs: {dir: ...} (relative to the file); a name whose run record
    names log_dir; --state-dir DIR (a line run with procgraph run --state-dir DIR)."""
    graph = tmp_path / "g" / "line.yaml"
    graph.parent.mkdir()
    graph.write_text("name: line\nlogs: {dir: mylogs}\n"
                     "agents:\n  cam: {class: 'procgraph.examples:Counter'}\n")
    _write_one(graph.parent / "mylogs", "cam[0]", "from logs.dir")
    assert "from logs.dir" in _cli(str(graph))[1]
    elsewhere = tmp_path / "elsewhere"
    _write_one(elsewhere, "cam[0]", "from the run record")
    record = runs.record_path(tmp_path / "state")
    runs.write_record(record, graph="other", file=str(tmp_path / "other.yaml"),
                      pid=os.getpid(), host="", started=time.time(), log_dir=str(elsewhere))
    try:
        assert "from the run record" in _cli("other")[1]
    finally:
        runs.remove_record(record)
    _write_one(tmp_path / "st" / "logs", "supervisor", "from --state-dir")
    assert "from --state-dir" in _cli("third", "--state-dir", str(tmp_path / "st"))[1]


class _Follow(Collected):
    """``procgraph logs ... -f`` as a process, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        super().__init__(["logs", *args, "-f"])

    def wait(self, text: str, what: str, timeout_s: float = 15) -> None:
        wait_for(lambda: any(text in line for line in self.lines), timeout_s,
                 f"{what}; output:\n" + "\n".join(self.lines[-20:]))


def test_follow_prints_new_records_through_rotation_and_new_replicas() -> None:
    """-f prints what is written after it started: through several rotations between two
    looks (nothing lost, nothing twice), a new replica's file, a traceback whole; Ctrl-C
    ends it with exit 0."""
    folder = log_dir("demo")
    files = LogFiles(folder, max_bytes=4096, keep=5)
    _write_one(folder, "cam[2]", "rotated away before the follow", ts=time.time() - 10)
    os.replace(folder / "cam.2.log", folder / "cam.2.log.1")  # a source with no live file
    files.write("cam[0]", "INFO", "before the follow")
    follow = _Follow("demo", "cam", "-n", "1")
    try:
        follow.wait("before the follow", "the last record before -f")
        for i in range(60):  # a new replica that rotates at once (likely before a look)
            files.write("cam[5]", "INFO", f"procgraph.cam.5: new {i:03d} " + "y" * 80)
        for i in range(150):  # ~17 KB: 4 rotations, most of them within one 0.2 s poll
            files.write("cam[0]", "INFO", f"procgraph.cam.0: frame {i:03d} " + "x" * 80)
        files.write("cam[3]", "ERROR", "procgraph.runtime: new replica failed",
                    more=["Traceback (most recent call last):", "ValueError: bad"])
        files.write("clf[0]", "INFO", "not followed: another agent")
        files.write("cam[0]", "INFO", "procgraph.cam.0: the end")
        follow.wait("the end", "the last record, after the rotations")
        follow.wait("ValueError: bad", "the new replica's traceback")
        assert len(list(folder.glob("cam.0.log.*"))) >= 3
    finally:
        files.close()
        code = follow.stop()
    frames = [line.split()[-2] for line in follow.lines if "frame" in line]
    assert frames == [f"{i:03d}" for i in range(150)]
    at = next(i for i, line in enumerate(follow.lines) if "new replica failed" in line)
    assert follow.lines[at + 1:at + 3] == ["    Traceback (most recent call last):",
                                           "    ValueError: bad"]
    assert [line.split()[-2] for line in follow.lines if "cam.5: new" in line] == [
        f"{i:03d}" for i in range(60)]
    assert not any("not followed" in line or "rotated away" in line for line in follow.lines)
    assert code == 0, follow.lines


CHATTY = '''
import time
from procgraph import Agent


class Chatty(Agent):
    """Logs at several levels, prints raw output and one exception, then idles."""

    def run(self) -> None:
        self.log.debug("chatty debug %d", self.context.replica)
        self.log.info("chatty info %d", self.context.replica)
        self.log.warning("chatty warning %d", self.context.replica)
        print(f"chatty raw print {self.context.replica}", flush=True)
        try:
            raise ValueError("chatty boom")
        except ValueError:
            self.log.exception("chatty failed %d", self.context.replica)
        n = 0
        while self.running:
            n += 1
            self.log.info("chatty tick %d", n)
            self.sleep(0.2)
'''


def test_a_real_run_then_logs_and_follow(tmp_path: Path) -> None:
    """A real procgraph run of a 2-replica agent: logs -f of the running line shows new
    records as they come; once it stopped, logs GRAPH shows its replicas' and the
    supervisor's records merged by time, --level and AGENT[i] filter them."""
    (tmp_path / "chatty.py").write_text(CHATTY)
    graph = tmp_path / "chat.yaml"
    graph.write_text("name: chat\nbrokers: {main: {url: embedded}}\n"
                     "agents:\n  talk: {class: 'chatty:Chatty', replicas: 2, "
                     "log_level: debug}\n")
    run = Run(graph)
    follow: _Follow | None = None
    try:
        run.wait_line(r"ready in", 30)
        wait_for(lambda: (log_dir("chat") / "talk.1.log").is_file(), 15, "talk.1.log")
        follow = _Follow(str(graph), "talk[1]", "-n", "0")
        follow.wait("chatty tick 5", "a record written after logs -f started")
        run.ctrl_c()
        assert run.finish(30) == 0, run.output
    finally:
        run.stop()
        code = follow.stop() if follow is not None else 0
    assert code == 0
    assert follow is not None and not any("talk[0]" in line for line in follow.lines)
    code, out, err = _cli("chat")
    assert code == 0, err
    heads = _heads(out)
    sources = {s for s, _, _ in heads}
    assert {"talk[0]", "talk[1]", "supervisor"} <= sources, out[-3000:]
    for replica in (0, 1):
        mine = [(lv, t) for s, lv, t in heads if s == f"talk[{replica}]"]
        assert any(lv == "DEBUG" and t.endswith(f"chatty debug {replica}") for lv, t in mine)
        assert any(lv == "OUTPUT" and t == f"chatty raw print {replica}" for lv, t in mine)
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "chatty failed 1" in line)
    assert lines[at + 1].startswith("    Traceback") and any(
        "ValueError: chatty boom" in line for line in lines[at + 1:at + 12])
    warned = _heads(_cli("chat", "talk[0]", "--level", "WARNING")[1])
    assert {lv for _, lv, _ in warned} <= {"WARNING", "ERROR", "CRITICAL", "OUTPUT"}
    assert any(t.endswith("chatty warning 0") for _, _, t in warned)
    assert {s for s, _, _ in warned} == {"talk[0]"}


def test_a_record_of_another_day_shows_its_date() -> None:
    """Beyond today the time alone is ambiguous (--since 2d): the date comes first."""
    from procgraph.cli.logs_cmd import format_line
    from procgraph.logfiles import LogRecordLine

    now = time.time()
    today = format_line(LogRecordLine(now, "INFO", "cam[0]", "procgraph.cam.0: now"))
    old = format_line(LogRecordLine(now - 3 * 86400, "INFO", "cam[0]", "procgraph.cam.0: then"))
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} cam\[0\] INFO ", today), today
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} cam\[0\] INFO ", old), old
