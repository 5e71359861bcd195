"""A line's log files: one rotating, size-capped file per replica and one for the supervisor.

The supervisor writes them (it reads each replica's output, so a ``print()``, a library's own
output and an interpreter crash land there too); ``procgraph logs`` reads them. Layout, in
:func:`log_dir` (``<graph state folder>/logs`` unless the graph says ``logs: {dir: PATH}``)::

    front_clf.0.log      the newest lines of replica 0 of agent front_clf
    front_clf.0.log.1    older ones (up to ``keep`` rotated files, .1 the newest of them)
    supervisor.log       the supervisor's own lines (supervisor.<node>.log with --node)

One record per line, ``<ISO time with offset> <LEVEL> <source> <text>``::

    2026-12-01T16:45:02.123+00:00 WARNING front_clf[0] procgraph.runtime: handler on_image ...
        Traceback (most recent call last):

``LEVEL`` is a logging level, or ``OUTPUT`` for raw output of the process; continuation
lines (a traceback) begin with four spaces. Every line is already safe text
(:func:`procgraph.safetext.printable`): one record cannot forge another.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from procgraph.safetext import printable

if TYPE_CHECKING:
    from procgraph.graph import GraphPlan

#: level names in order; OUTPUT (raw output of a process) sorts with WARNING
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
OUTPUT = "OUTPUT"
#: the default cap of one file, and how many rotated files are kept beside it
MAX_BYTES = 5 * 1024 * 1024
KEEP = 3
#: the cap of one line in a file (a longer record is cut, saying its size)
LINE_LIMIT = 16_000
CONTINUATION = "    "
_RECORD = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:?\d\d|Z)?) (\w+) (\S+) ?(.*)$")


def level_number(level: str) -> int:
    """A level name's rank (DEBUG 10 .. CRITICAL 50; OUTPUT counts as WARNING)."""
    name = level.upper()
    if name == OUTPUT:
        name = "WARNING"
    return (LEVELS.index(name) + 1) * 10 if name in LEVELS else 20


def log_dir(plan: GraphPlan | str, state_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of a line's log files: graph ``logs.dir`` (relative to the graph file),
    else ``<graph state folder>/logs`` (procgraph.durability.graph_state_dir)."""
    from procgraph.durability import graph_state_dir

    if isinstance(plan, str):
        return graph_state_dir(plan, state_dir) / "logs"
    configured = getattr(getattr(plan, "logs", None), "dir", None)
    if configured:
        path = Path(os.path.expandvars(str(configured))).expanduser()
        return path if path.is_absolute() else Path(plan.graph_dir) / path
    return graph_state_dir(plan.name, state_dir) / "logs"


def file_name(source: str) -> str:
    """The file of a source: ``front_clf[0]`` -> ``front_clf.0.log``."""
    if source.endswith("]") and "[" in source:
        agent, _, index = source[:-1].partition("[")
        return f"{agent}.{index}.log"
    return f"{source}.log"


def source_of(path: Path) -> str:
    """The source whose lines a file holds: ``front_clf.0.log.2`` -> ``front_clf[0]``."""
    name = path.name
    stem = name[: name.index(".log")] if ".log" in name else name
    agent, dot, index = stem.rpartition(".")
    return (f"{agent}[{index}]" if dot and index.isdigit() and agent != "supervisor"
            else stem)


def format_time(ts: float) -> str:
    """``ts`` as ISO local time with milliseconds and the UTC offset."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def format_record(ts: float, level: str, source: str, text: str,
                  more: Iterable[str] = ()) -> str:
    """One record as file lines (ending with a newline); every part made safe and capped."""
    head = (f"{format_time(ts)} {printable(level, 16)} {printable(source, 128)} "
            f"{printable(text, LINE_LIMIT)}")
    lines = [head, *(CONTINUATION + printable(line, LINE_LIMIT) for line in more)]
    return "\n".join(lines) + "\n"


class RotatingLog:
    """One source's log file, rotated at ``max_bytes`` keeping ``keep`` older files.

    Each record is appended with the file opened and closed again (no handle is held, so a
    file moved or deleted by hand, or by logrotate, is simply made anew). Safe to call from
    several threads; an error writing (disk full, folder gone) is counted in :attr:`errors`
    and never raised: a log must not stop a line.
    """

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path = path
        self.max_bytes = max(4096, max_bytes)
        self.keep = max(0, keep)
        self.errors = 0
        self._lock = threading.Lock()

    def write(self, ts: float, level: str, source: str, text: str,
              more: Iterable[str] = ()) -> None:
        """Append one record (see :func:`format_record`)."""
        data = format_record(ts, level, source, text, more).encode("utf-8", "replace")
        with self._lock:
            try:
                self._append(data)
            except OSError:
                self.errors += 1

    def _append(self, data: bytes) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            size = 0
        if size and size + len(data) > self.max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        if self.keep == 0:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def close(self) -> None:
        """Nothing to close (kept for symmetry with other logs)."""


@dataclass
class LogFiles:
    """The log files of one supervisor: one :class:`RotatingLog` per source, made on use."""

    folder: Path
    max_bytes: int = MAX_BYTES
    keep: int = KEEP
    _logs: dict[str, RotatingLog] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def path(self, source: str) -> Path:
        """The current file of ``source`` (``agent[i]`` or ``supervisor``)."""
        return self.folder / file_name(source)

    def log(self, source: str) -> RotatingLog:
        """The (shared) log of ``source``."""
        with self._lock:
            if source not in self._logs:
                self._logs[source] = RotatingLog(self.path(source), self.max_bytes, self.keep)
            return self._logs[source]

    def write(self, source: str, level: str, text: str, more: Iterable[str] = (),
              ts: float | None = None) -> None:
        """Append one record of ``source``."""
        self.log(source).write(time.time() if ts is None else ts, level, source, text, more)

    def close(self) -> None:
        """Close every file."""
        with self._lock:
            for log in self._logs.values():
                log.close()


# -- reading --------------------------------------------------------------------------------
@dataclass
class LogRecordLine:
    """One record read back from a file: time, level, source, text and continuation lines."""

    ts: float
    level: str
    source: str
    text: str
    more: list[str] = field(default_factory=list)


def parse_time(text: str) -> float | None:
    """The epoch seconds of an ISO time as the files write it (None if it is not one)."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_lines(lines: Iterable[str]) -> Iterator[LogRecordLine]:
    """The records of a file's lines; a line that is not a record's head or continuation
    (a file cut mid-line, a foreign line) becomes an OUTPUT record of the previous time."""
    current: LogRecordLine | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if current is not None and line.startswith(CONTINUATION):
            current.more.append(line[len(CONTINUATION):])
            continue
        match = _RECORD.match(line)
        ts = parse_time(match.group(1)) if match else None
        if current is not None:
            yield current
        if match and ts is not None:
            current = LogRecordLine(ts, match.group(2), match.group(3), match.group(4))
        else:
            current = LogRecordLine(current.ts if current else 0.0, OUTPUT, "?", line)
    if current is not None:
        yield current


def files_of(folder: Path, source_prefix: str | None = None) -> list[tuple[str, list[Path]]]:
    """Each source's files in ``folder``, oldest first, by source name.

    ``source_prefix`` keeps only matching sources: an agent name (all its replicas),
    ``agent[i]`` (one replica) or ``supervisor``.
    """
    by_source: dict[str, list[tuple[int, Path]]] = {}
    if not folder.is_dir():
        return []
    for path in folder.iterdir():
        name = path.name
        if ".log" not in name or not path.is_file():
            continue
        suffix = name[name.index(".log") + 4:]
        if suffix and not (suffix.startswith(".") and suffix[1:].isdigit()):
            continue
        order = int(suffix[1:]) if suffix else 0
        source = source_of(path)
        if source_prefix is not None and not _matches(source, source_prefix):
            continue
        by_source.setdefault(source, []).append((order, path))
    return [(source, [p for _, p in sorted(paths, key=lambda item: -item[0])])
            for source, paths in sorted(by_source.items())]


def _matches(source: str, wanted: str) -> bool:
    if source == wanted:
        return True
    if "[" in wanted:
        return False
    base = source.partition("[")[0]
    if base == wanted:
        return True
    return wanted == "supervisor" and source.startswith("supervisor.")
