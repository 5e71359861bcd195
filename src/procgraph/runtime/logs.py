"""Log lines of a replica: they name the agent and replica (the supervisor adds colour).

Under a supervisor each record is one line ``@pg {json}`` on stdout (:class:`WireFormatter`:
time, level, logger, message, the full traceback and a short one); the supervisor writes
every record to the replica's log file (procgraph.logfiles) and shows on the console those at
its console level, an exception as its last frames of user code plus where the whole
traceback is. Run alone (``procgraph agent``), a replica prints plain lines with the time.

Every record goes through :class:`SafeFormatter`: its message (arguments included) is one
line with control characters escaped (``\\n`` shows as a backslash and an ``n``) and is cut
at :data:`LOG_MESSAGE_LIMIT` characters with the size of the whole message, so a message
key holding ``"\\nERROR supervisor: ..."`` cannot forge a line and a 10 MB value cannot make
a 10 MB line. A traceback keeps its frames on their own lines, but each exception's text is
escaped onto one line too.
"""

from __future__ import annotations

import json
import logging
import sys
import sysconfig
import traceback
from pathlib import Path
from types import TracebackType

from procgraph.safetext import printable

#: the cap of one log record's message, in characters (the traceback comes on top)
LOG_MESSAGE_LIMIT = 1000
#: what starts a supervised replica's log record on its stdout (the rest is JSON)
WIRE_PREFIX = "@pg "
#: the most traceback lines one record carries to the supervisor (the last ones kept)
TRACEBACK_LINES = 200

_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"
_ExcInfo = (tuple[type[BaseException], BaseException, TracebackType | None]
            | tuple[None, None, None])


def _exception_lines(te: traceback.TracebackException, limit: int) -> list[str]:
    """A traceback as lines: frames as Python prints them, each exception's text escaped."""
    lines: list[str] = []
    if te.__cause__ is not None:
        lines += [*_exception_lines(te.__cause__, limit), "", _CAUSE, ""]
    elif te.__context__ is not None and not te.__suppress_context__:
        lines += [*_exception_lines(te.__context__, limit), "", _CONTEXT, ""]
    if te.stack:
        lines.append("Traceback (most recent call last):")
        lines += [printable(ln, limit) for ln in "".join(te.stack.format()).splitlines()]
    lines.append(printable("".join(te.format_exception_only()).rstrip("\n"), limit))
    return lines


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose records are one escaped, capped line each.

    ``limit`` caps the message (arguments included; the cut says the size of the whole
    message), and the rest of the line is escaped too; an exception's traceback follows on
    lines of its own, frames kept, exception texts escaped and capped.
    """

    def __init__(self, fmt: str | None = None, datefmt: str | None = None,
                 limit: int = LOG_MESSAGE_LIMIT) -> None:
        super().__init__(fmt, datefmt)
        self.limit = limit

    def format(self, record: logging.LogRecord) -> str:
        """The record as text: one safe line, then its traceback or stack, if any."""
        record.message = printable(record.getMessage(), self.limit)
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = printable(self.formatMessage(record), 2 * self.limit)  # e.g. a logger's name
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + "\n".join(printable(ln, self.limit)
                                     for ln in record.exc_text.splitlines())
        if record.stack_info:
            text += "\n" + "\n".join(printable(ln, self.limit)
                                     for ln in self.formatStack(record.stack_info).splitlines())
        return text

    def formatException(self, ei: _ExcInfo) -> str:
        """The traceback of ``ei``, each exception's text escaped onto one line."""
        if ei[1] is None:
            return ""
        te = traceback.TracebackException(type(ei[1]), ei[1], ei[2], compact=True)
        return "\n".join(_exception_lines(te, self.limit))


_PROCGRAPH_DIR = Path(__file__).resolve().parents[1]
_OWN_AGENTS_DIR = _PROCGRAPH_DIR / "agents"  # the editable layout keeps them apart anyway
_LIBRARY_DIRS = tuple({str(Path(p).resolve()) for key in ("stdlib", "platstdlib", "purelib",
                                                          "platlib")
                       if (p := sysconfig.get_paths().get(key))})


def _is_library(filename: str) -> bool:
    """True for a frame of procgraph's framework, the standard library or an installed
    package: not where a user's (or a ready-made agent's) code is."""
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):
        return True
    text = str(path)
    if path.is_relative_to(_PROCGRAPH_DIR) and not path.is_relative_to(_OWN_AGENTS_DIR):
        return True
    if "/procgraph/agents/" in text:  # the ready-made agents, installed in site-packages
        return False
    return filename.startswith("<") or text.startswith(_LIBRARY_DIRS)


def brief_traceback(exc: BaseException, frames: int = 2) -> list[str]:
    """An exception in a few lines: the last frames of user code (or, if none, the last
    frame), each ``file.py:LINE in FUNC: code``, then ``Type: message``."""
    stack = traceback.extract_tb(exc.__traceback__)
    users = [f for f in stack if not _is_library(f.filename)]
    chosen = users[-frames:] if users else stack[-1:]
    if stack and users and stack[-1] is not users[-1]:
        chosen = [*users[-(frames - 1):], stack[-1]] if frames > 1 else [stack[-1]]
    lines = [printable(f"{_short_path(f.filename)}:{f.lineno} in {f.name}: "
                       f"{(f.line or '').strip()}", LOG_MESSAGE_LIMIT) for f in chosen]
    only = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    lines.append(printable(only, LOG_MESSAGE_LIMIT))
    return lines


def _short_path(filename: str) -> str:
    """A frame's file as short as still clear: relative to the working folder, else
    from its package folder (``.../site-packages/x/y.py`` -> ``x/y.py``)."""
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        pass
    parts = path.parts
    for marker in ("site-packages", "dist-packages", "src", "agents"):
        if marker in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(marker):]) or filename
    return filename


class WireFormatter(SafeFormatter):
    """A supervised replica's records for the supervisor: ``@pg`` + one JSON object (ASCII).

    Keys: ``ts`` (epoch seconds), ``level``, ``logger``, ``msg`` (escaped, capped), and with
    an exception ``exc`` (the whole traceback, as lines) and ``brief`` (its last user frames
    and the exception line, :func:`brief_traceback`).
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one ``@pg {...}`` line."""
        data: dict[str, object] = {
            "ts": round(record.created, 6), "level": record.levelname,
            "logger": printable(record.name, 200),
            "msg": printable(record.getMessage(), self.limit)}
        ei = record.exc_info
        if ei and ei[1] is not None:
            lines = self.formatException(ei).splitlines()
            if len(lines) > TRACEBACK_LINES:
                lines = [f"... {len(lines) - TRACEBACK_LINES} lines left out ...",
                         *lines[-TRACEBACK_LINES:]]
            data["exc"] = lines
            data["brief"] = brief_traceback(ei[1])
        elif record.stack_info:
            data["exc"] = [printable(ln, self.limit)
                           for ln in self.formatStack(record.stack_info).splitlines()]
        return WIRE_PREFIX + json.dumps(data, ensure_ascii=True, separators=(",", ":"))


def configure_logging(agent: str, replica: int, supervised: bool,
                      level: str = "info") -> None:
    """Log at ``level`` (procgraph's loggers and the agent's ``self.log``; other libraries
    at info and above): ``@pg`` records for the supervisor, else plain lines with the time
    that name the agent and replica."""
    number = logging.getLevelName(level.upper())
    number = number if isinstance(number, int) else logging.INFO
    handler = logging.StreamHandler(sys.stdout if supervised else sys.stderr)
    handler.setFormatter(WireFormatter() if supervised else SafeFormatter(
        f"%(asctime)s %(levelname)s [{agent}-{replica}] %(name)s: %(message)s"))
    logging.basicConfig(level=max(number, logging.INFO), handlers=[handler], force=True)
    logging.getLogger("procgraph").setLevel(number)
