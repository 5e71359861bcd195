"""Log lines of a replica: they name the agent and replica (the supervisor adds colour).

Every record goes through :class:`SafeFormatter`: its message (arguments included) is one
line with control characters escaped (``\\n`` shows as a backslash and an ``n``) and is cut
at :data:`LOG_MESSAGE_LIMIT` characters with the size of the whole message, so a message
key holding ``"\\nERROR supervisor: ..."`` cannot forge a line and a 10 MB value cannot make
a 10 MB line. A traceback keeps its frames on their own lines, but each exception's text is
escaped onto one line too.
"""

from __future__ import annotations

import logging
import traceback
from types import TracebackType

from procgraph.safetext import printable

#: the cap of one log record's message, in characters (the traceback comes on top)
LOG_MESSAGE_LIMIT = 1000

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


def configure_logging(agent: str, replica: int, supervised: bool) -> None:
    """Log lines name the agent and replica (the supervisor adds a coloured prefix)."""
    fmt = "%(levelname)s %(name)s: %(message)s" if supervised else (
        f"%(asctime)s %(levelname)s [{agent}-{replica}] %(name)s: %(message)s")
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(fmt))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
