"""Log lines and forwarded child output carry outside text safely: one line, escaped, capped.

Issue 9 item 6: a message key with a newline forged a supervisor log line, and a 10 MB value
made a 42 MB log line. Replicas log through :class:`procgraph.runtime.logs.SafeFormatter`
and the supervisor forwards child output through :func:`procgraph.console.read_lines`.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

from pgtest_procs import Run
from procgraph.console import LINE_LIMIT, Console, read_lines
from procgraph.runtime.logs import LOG_MESSAGE_LIMIT, SafeFormatter

FORGED = "k1\nERROR supervisor: forged"
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # any control char but \t and \n

AGENTS = '''
import logging
import sys

from procgraph import Agent, Input, Message, Output

log = logging.getLogger("forge_agents")
FORGED = "k1\\nERROR supervisor: forged"


class Item(Message):
    """One numbered item."""

    n: int


class Source(Agent):
    """Sends two items keyed FORGED, prints hostile text, logs a 10 MB value."""

    out = Output(Item)

    def run(self) -> None:
        print("printed\\r    supervisor | forged by print\\x1b[2J", flush=True)
        sys.stdout.write("p" * 10_000_000 + "\\n")
        sys.stdout.flush()
        log.info("value %s", "v" * 10_000_000)
        self.out.send(Item(n=1, key=FORGED))
        self.out.send(Item(n=2, key=FORGED))
        log.info("source sent both")
        while self.running:
            self.sleep(0.1)


class Sink(Agent):
    """Logs the key of each item; item 2 always fails (its traceback names the key)."""

    items = Input(Item)

    def on_items(self, msg: Item) -> None:
        log.info("got key %s", msg.key)
        if msg.n == 2:
            raise ValueError(f"cannot handle {msg.key}")
'''

GRAPH = """\
name: forge
brokers:
  main: {url: embedded}
agents:
  source: {class: "forge_agents:Source"}
  sink: {class: "forge_agents:Sink", inputs: {items: source.out}, max_deliveries: 2}
"""

PREFIX = re.compile(r"^\s*(\S+) \| (.*)$")


def test_item06_key_with_newline_cannot_forge_a_supervisor_line(tmp_path: Path) -> None:
    """Issue 9 item 6: a handler logging a key with "\\nERROR supervisor: forged" (and its
    traceback, a print with \\r and ESC, a 10 MB log value and a 10 MB printed line) gives
    one escaped, capped line each in the supervisor's output; no line is forged."""
    (tmp_path / "forge_agents.py").write_text(AGENTS)
    graph = tmp_path / "forge.yaml"
    graph.write_text(GRAPH)
    run = Run(graph, "--console-level", "info", state_dir=tmp_path / "state")
    try:
        run.wait_line(r"sink\[0\] \| .*got key k1\\nERROR supervisor: forged")
        run.wait_line(r"sink\[0\] \| .*failed 2 times: dead-lettering")
        run.wait_line(r"sink\[0\] \| +ValueError: cannot handle k1\\nERROR supervisor: forged$")
        run.wait_line(r"source\[0\] \| .*source sent both")
    finally:
        run.stop()
    lines = run.lines
    forged = [ln for ln in lines
              if (m := PREFIX.match(ln)) and m.group(2).startswith("ERROR supervisor")]
    assert forged == [], forged
    supervisor = [ln for ln in lines if (m := PREFIX.match(ln)) and m.group(1) == "supervisor"]
    assert not [ln for ln in supervisor if "forged" in ln], supervisor
    for ln in lines:
        assert not CONTROL.search(ln), f"control character passed through: {ln!r}"
        assert len(ln) < LINE_LIMIT + 200, f"line of {len(ln)} chars: {ln[:200]!r}..."
    printed = [ln for ln in lines if "printed" in ln]
    assert len(printed) == 1 and printed[0].startswith("     source[0] | printed\\r"), printed
    assert "\\x1b[2J" in printed[0]
    assert any("[cut, 10000000 bytes in all]" in ln and "ppp" in ln for ln in lines)
    assert any("value vvv" in ln and "...[cut, " in ln for ln in lines)


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("forge", logging.INFO, __file__, 1, msg, args, info)


def test_item06_log_formatter_escapes_and_caps_messages() -> None:
    """Issue 9 item 6: a key with "\\nERROR supervisor: forged" and a 10 MB value as log
    arguments give one line, escaped, capped to about LOG_MESSAGE_LIMIT characters."""
    fmt = SafeFormatter("%(levelname)s %(name)s: %(message)s")
    line = fmt.format(_record("got key %s", FORGED))
    assert line == "INFO forge: got key k1\\nERROR supervisor: forged"
    big = fmt.format(_record("value %s\x1b[2J", "v" * 10_000_000))
    assert "\n" not in big and "\x1b" not in big
    assert len(big) < LOG_MESSAGE_LIMIT + 100
    assert big.endswith("...[cut, 10000010 chars in all]")


def test_item06_log_formatter_escapes_the_exception_text_of_a_traceback() -> None:
    """Issue 9 item 6: a traceback whose exception text holds "\\nERROR supervisor: forged"
    (and its cause) keeps the frames but shows each exception text on one line."""
    try:
        try:
            raise KeyError("inner\r\x1b[31m")
        except KeyError as inner:
            raise ValueError(f"cannot handle {FORGED}") from inner
    except ValueError as exc:
        text = SafeFormatter("%(message)s").format(_record("failed", exc=exc))
    lines = text.split("\n")
    assert lines[0] == "failed"
    assert "ValueError: cannot handle k1\\nERROR supervisor: forged" in lines
    assert "KeyError: 'inner\\r\\x1b[31m'" in lines
    assert not [ln for ln in lines if ln.startswith("ERROR")]
    assert "The above exception was the direct cause of the following exception:" in lines
    assert any(ln.startswith("  File ") for ln in lines)
    assert not CONTROL.search(text)


def test_item06_child_output_is_escaped_and_capped_per_line() -> None:
    """Issue 9 item 6: child output with \\r, ESC and a 10 MB line: one escaped line each,
    the long one cut with its size, read in bounded pieces."""
    raw = (b"ok\n" b"x\r     supervisor | forged\x1b[2J\n" + b"p" * 10_000_000 + b"\n"
           b"bad utf-8 \xff\xfe\n" b"last without newline")
    lines = list(read_lines(io.BufferedReader(io.BytesIO(raw))))
    assert lines[0] == "ok"
    assert lines[1] == "x\\r     supervisor | forged\\x1b[2J"
    assert lines[2].startswith("ppp") and lines[2].endswith("...[cut, 10000000 bytes in all]")
    assert len(lines[2]) < LINE_LIMIT + 50
    assert lines[3] == "bad utf-8 \\xff\\xfe"
    assert lines[4] == "last without newline"
    assert len(lines) == 5


def test_item06_console_escapes_every_line() -> None:
    """Issue 9 item 6: a line handed to the supervisor's console with a newline and ESC is
    printed as one escaped line."""
    out = io.StringIO()
    Console(out, colour=False).say("sink[0]", f"got {FORGED}\x1b[2J")
    assert out.getvalue() == "       sink[0] | got k1\\nERROR supervisor: forged\\x1b[2J\n"
