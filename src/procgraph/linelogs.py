"""The supervisor's side of a line's logs: every line is filed, the important ones shown.

Each line a replica prints is either one of its log records (``@pg {json}``, from
:class:`procgraph.runtime.logs.WireFormatter`) or raw output (a ``print()``, a library
writing to stdout, the interpreter dying). :class:`LineLogs` writes every one to the
replica's log file (:mod:`procgraph.logfiles`) and shows on the console:

- records at the console level and above (WARNING by default), without the logger's name
  when it is procgraph's own;
- an exception as its last frames of user code and the exception line, then where the whole
  traceback is (the file, and the ``procgraph logs`` command that shows it);
- raw output always (it is rare, and unexpected).

The supervisor's own lines are shown and filed (``supervisor.log``) too.
"""

from __future__ import annotations

import json
import re
from typing import Any

from procgraph.console import LINE_LIMIT, Console
from procgraph.logfiles import LINE_LIMIT as FILE_LINE_LIMIT
from procgraph.logfiles import OUTPUT, LogFiles, level_number
from procgraph.runtime.logs import WIRE_PREFIX
from procgraph.safetext import printable

#: the console shows records at this level and above unless told otherwise
CONSOLE_LEVEL = "warning"


_CUT = re.compile(r"\.\.\.\[cut, \d+ \w+ in all\]$")


def shorten(line: str, limit: int) -> str:
    """An already safe line cut to ``limit`` characters, keeping the size a first cut said
    (``...[cut, 10000000 bytes in all]``)."""
    if len(line) <= limit:
        return line
    said = _CUT.search(line)
    return line[:limit] + (said.group() if said else f"...[cut, {len(line)} chars in all]")


def parse_record(line: str) -> dict[str, Any] | None:
    """A replica's ``@pg`` record as a dict with the expected keys and types, else None."""
    if not line.startswith(WIRE_PREFIX):
        return None
    try:
        data = json.loads(line[len(WIRE_PREFIX):])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    ok = (isinstance(data.get("ts"), int | float) and isinstance(data.get("level"), str)
          and isinstance(data.get("logger"), str) and isinstance(data.get("msg"), str))
    for key in ("exc", "brief"):
        value = data.get(key)
        if value is not None and not (isinstance(value, list)
                                      and all(isinstance(v, str) for v in value)):
            ok = False
    return data if ok else None


class LineLogs:
    """Files and shows the lines of one supervisor: its own and its replicas'."""

    def __init__(self, console: Console, files: LogFiles, graph: str,
                 console_level: str = CONSOLE_LEVEL, supervisor: str = "supervisor") -> None:
        self.console = console
        self.files = files
        self.graph = graph
        self.console_level = level_number(console_level)
        #: the supervisor's own source name (``supervisor.<node>`` with --node)
        self.supervisor = supervisor

    def say(self, prefix: str, line: str, colour_index: int = 0) -> None:
        """A supervisor line (or a broker's): shown, and filed in the supervisor's log."""
        self.console.say(prefix, line, colour_index)
        level = ("ERROR" if line.startswith("error") else
                 "WARNING" if line.startswith("warning") else "INFO")
        text = line if prefix == "supervisor" else f"{prefix}: {line}"
        self.files.write(self.supervisor, level, printable(text, 4000))

    def replica_line(self, source: str, agent: str, line: str, colour_index: int = 0) -> None:
        """One line of a replica's output: filed in its log, shown if it matters."""
        record = parse_record(line)
        if record is None:
            self.files.write(source, OUTPUT, shorten(line, FILE_LINE_LIMIT))
            self.console.say(source, shorten(line, LINE_LIMIT), colour_index)
            return
        level = printable(record["level"], 16).upper()
        logger = record["logger"]
        msg = record["msg"]
        more = record.get("exc") or []
        self.files.write(source, level, f"{logger}: {msg}", more, ts=float(record["ts"]))
        if level_number(level) < self.console_level:
            return
        own = logger.startswith("procgraph.") or logger == "procgraph"
        shown = msg if own else f"{logger}: {msg}"
        self.console.say(source, f"{level} {shown}", colour_index)
        brief = record.get("brief")
        if brief:
            for item in brief:
                self.console.say(source, f"    {item}", colour_index)
        if more:
            path = self.files.path(source)
            self.console.say(source, f"    full traceback: procgraph logs {self.graph} {agent}"
                             f"  (file {path})", colour_index)

    def close(self) -> None:
        """Close the files."""
        self.files.close()
