"""``procgraph logs GRAPH [SOURCE]``: a line's log files, merged by time, optionally followed.

The files are the ones the supervisor writes (:mod:`procgraph.logfiles`): one per replica
and one for the supervisor, rotated files included. Records of every matching file are
merged by time and printed ``HH:MM:SS.mmm source LEVEL text`` (continuation lines, a
traceback, indented under their record). ``-f`` keeps printing new records, follows a file
through its rotation and picks up the files of replicas that start later, until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import IO, Annotated

import typer

from procgraph.cli.common import fail, load_or_exit
from procgraph.errors import ProcgraphError
from procgraph.graph import GraphPlan, load_graph
from procgraph.logfiles import (
    CONTINUATION,
    LEVELS,
    LogRecordLine,
    files_of,
    level_number,
    log_dir,
    parse_lines,
)
from procgraph.runs import runs_of
from procgraph.safetext import printable

#: how often ``-f`` looks for new lines, rotated and new files
POLL_S = 0.2
#: the cap of one printed line (records are capped in the files already)
TEXT_LIMIT = 16_000
_SOURCE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(\[\d+\])?$")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_COLOURS = {"WARNING": typer.colors.YELLOW, "ERROR": typer.colors.RED,
            "CRITICAL": typer.colors.BRIGHT_RED, "DEBUG": typer.colors.BRIGHT_BLACK}


def parse_since(value: str, now: float | None = None) -> float:
    """Epoch seconds of ``--since``: a duration back from now (``30s``, ``10m``, ``2h``,
    ``1d``, ``1h30m``), an ISO time (``2026-12-01T16:45``, local time unless it has an
    offset) or a time of today (``16:45``, ``16:45:02``). ValueError when it is none."""
    now = time.time() if now is None else now
    text = value.strip()
    if _DURATION.match(text):
        return now - sum(float(n) * _UNIT_S[u] for n, u in _PART.findall(text))
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment.timestamp()  # a naive time counts as local time
    with contextlib.suppress(ValueError):
        today = datetime.combine(date.fromtimestamp(now), dtime.fromisoformat(text))
        return today.timestamp()
    raise ValueError(value)


def format_line(record: LogRecordLine, width: int = 0, colour: bool = False) -> str:
    """A record as printed: ``HH:MM:SS.mmm source LEVEL text`` plus its continuation lines,
    every part through :func:`procgraph.safetext.printable`; a record of another day than
    today starts with its date (``2026-11-30 23:59:58.120 ...``)."""
    stamp = datetime.fromtimestamp(record.ts)
    day = "" if stamp.date() == date.today() else stamp.strftime("%Y-%m-%d ")
    clock = day + stamp.strftime("%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"
    level = printable(record.level, 16)
    shown = level.ljust(8)
    if colour and level in _COLOURS:
        shown = typer.style(level, fg=_COLOURS[level]) + shown[len(level):]
    head = (f"{clock} {printable(record.source, 128).ljust(width)} {shown} "
            f"{printable(record.text, TEXT_LIMIT)}").rstrip()
    more = [CONTINUATION + printable(line, TEXT_LIMIT) for line in record.more]
    return "\n".join([head, *more])


# -- where the files are ---------------------------------------------------------------------
def _is_file_arg(graph: str) -> bool:
    return graph.endswith((".yaml", ".yml")) or "/" in graph or Path(graph).is_file()


def find_log_dirs(graph: str, state_dir: Path | None = None) -> tuple[list[Path], GraphPlan | None]:
    """The log folders of ``graph`` (a graph file or name) and its plan (from the file, else
    from the graph file a run record names; None when neither is known).

    ``--state-dir`` wins; else the folders the line's run records name (running ones
    first, then stale ones); else :func:`procgraph.logfiles.log_dir` (the graph's
    ``logs.dir`` or ``<state folder>/logs``).
    """
    plan = load_or_exit(Path(graph)) if _is_file_arg(graph) else None
    name = plan.name if plan is not None else graph
    if state_dir is not None:
        return [log_dir(plan if plan is not None else name, state_dir)], plan
    target = plan.file if plan is not None else graph
    found: list[Path] = []
    for stale in (False, True):
        records = runs_of(target, include_stale=stale)
        if plan is not None and not records:
            records = runs_of(plan.name, include_stale=stale)
        for record in sorted(records, key=lambda r: -r.started):
            folder = Path(record.log_dir) if record.log_dir else None  # older records: none
            if folder is not None and folder not in found:
                found.append(folder)
            if plan is None and record.file:
                plan = _quiet_plan(record.file)  # for its agent names
        if found:
            break
    if not found:
        found = [log_dir(plan if plan is not None and plan.name == name else name)]
    return found, plan


def _quiet_plan(file: str) -> GraphPlan | None:
    """The plan of a run record's graph file, or None (moved, broken: it is only a help)."""
    try:
        return load_graph(Path(file), warn=lambda _line: None)
    except (ProcgraphError, OSError, ValueError):
        return None


def _sources(folders: list[Path], wanted: str | None) -> dict[str, list[Path]]:
    merged: dict[str, list[Path]] = {}
    for folder in folders:
        for source, paths in files_of(folder, wanted):
            merged.setdefault(source, []).extend(paths)
    return merged


def _check_source(wanted: str | None, plan: GraphPlan | None) -> None:
    if wanted is None:
        return
    if not _SOURCE.match(wanted):
        raise fail(f"{printable(wanted, 100)!r} is not AGENT, AGENT[i] or supervisor")
    base = wanted.partition("[")[0]
    if plan is not None and base not in plan.agents and not base.startswith("supervisor"):
        agents = ", ".join(sorted(plan.agents)) or "none"
        raise fail(f"graph {plan.name!r} has no agent {printable(base, 100)!r} "
                   f"(agents: {agents}; or supervisor)")


# -- reading ---------------------------------------------------------------------------------
def _read_records(path: Path, source: str) -> Iterator[LogRecordLine]:
    """The records of one file (gone meanwhile: none)."""
    try:
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError:
        return
    with handle:
        for record in parse_lines(handle):
            if record.source == "?":
                record.source = source  # a line that is not a record: show whose file it is
            yield record


def _wanted_level(level: str | None) -> int:
    if level is None:
        return 0
    name = "WARNING" if level.upper() == "WARN" else level.upper()
    if name not in LEVELS:
        raise fail(f"--level {printable(level, 50)!r}: give one of {', '.join(LEVELS)}")
    return level_number(name)


class _More(LogRecordLine):
    """Continuation lines of a record printed a poll earlier."""


class _Tail:
    """The live file (``X.log``) of one source, read on as it grows and through rotation."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self.fh: IO[bytes] | None = None
        self.ino = -1
        self.buffer = b""
        self.pending: LogRecordLine | None = None
        self.last: LogRecordLine | None = None
        self._open()

    def _open(self) -> None:
        try:
            self.fh = open(self.path, "rb")  # noqa: SIM115 - kept open while it is followed
        except OSError:
            return
        self.ino = os.fstat(self.fh.fileno()).st_ino

    def read_rest(self) -> list[LogRecordLine]:
        """Every record from the current position to the end (once, at the start)."""
        records = self._records(self._read())
        if self.pending is not None:
            records.append(self.pending)
            self.pending = None
        return records

    def poll(self) -> list[LogRecordLine]:
        """The records complete since the last poll (a record is held back one poll, so
        continuation lines written with it are not cut off)."""
        data = self._read()
        try:
            st = self.path.stat()
        except OSError:
            st = None  # between the rename and the new file: keep reading the old one
        if self.fh is not None and st is not None and (
                st.st_ino != self.ino or st.st_size < self.fh.tell()):
            data += self._read()  # rotated (or truncated): the old file's last lines first
            self.fh.close()
            self.fh = None
            if st.st_ino != self.ino:
                data += self._skipped()
        if self.fh is None and st is not None:
            self._open()
            data += self._read()
        return self._records(data)

    def _skipped(self) -> bytes:
        """Files rotated in whole since the last poll (the old file is now ``X.log.k``:
        ``X.log.k-1`` .. ``X.log.1`` came after it), oldest first."""
        newer: list[Path] = []
        for k in range(1, 100):
            older = self.path.with_name(f"{self.path.name}.{k}")
            try:
                if older.stat().st_ino == self.ino:
                    break
            except OSError:
                break  # the old file is gone (past ``keep``): every kept one is newer
            newer.append(older)
        else:
            return b""
        data = b""
        for path in reversed(newer):
            with contextlib.suppress(OSError):
                data += path.read_bytes()
        return data

    def _read(self) -> bytes:
        if self.fh is None:
            return b""
        try:
            return self.fh.read()
        except OSError:
            return b""

    def _records(self, data: bytes) -> list[LogRecordLine]:
        out: list[LogRecordLine] = []
        if not data:
            if self.pending is not None:
                out.append(self.pending)  # nothing more came: its record is complete
                self.pending = None
            return out
        complete, sep, self.buffer = (self.buffer + data).rpartition(b"\n")
        if not sep:
            return out
        lines = complete.decode("utf-8", "replace").split("\n")
        while lines and lines[0].startswith(CONTINUATION):
            line = lines.pop(0)[len(CONTINUATION):]
            if self.pending is None:  # its record was printed already
                last = self.last
                self.pending = _More(last.ts if last else 0.0, last.level if last else "",
                                     self.source, "")
            self.pending.more.append(line)
        records = list(parse_lines(lines)) if lines else []
        for record in records:
            if record.source == "?":
                record.source = self.source
        if self.pending is not None and records:
            out.append(self.pending)
            self.pending = None
        if records:
            out.extend(records[:-1])
            self.pending = self.last = records[-1]
        return out


def _merged(sources: dict[str, list[Path]], since: float | None,
            tails: dict[Path, _Tail]) -> Iterator[LogRecordLine]:
    """Every record of ``sources`` merged by time (a live file in ``tails``: from its fd)."""
    streams: list[Iterable[LogRecordLine]] = []
    for source, paths in sources.items():
        def chain(source: str = source, paths: list[Path] = paths) -> Iterator[LogRecordLine]:
            for path in paths:
                tail = tails.get(path)
                if tail is not None:
                    yield from tail.read_rest()
                    continue
                with contextlib.suppress(OSError):
                    if since is not None and path.stat().st_mtime < since:
                        continue  # last written before --since: nothing in it to show
                yield from _read_records(path, source)
        streams.append(chain())
    return heapq.merge(*streams, key=lambda r: r.ts)


class _Printer:
    def __init__(self, min_level: int, width: int) -> None:
        self.min_level = min_level
        self.width = width
        self.colour = sys.stdout.isatty()  # as procgraph.console: colour on a terminal only

    def keep(self, record: LogRecordLine) -> bool:
        return level_number(record.level) >= self.min_level

    def show(self, records: Iterable[LogRecordLine]) -> None:
        out = sys.stdout
        for record in records:
            if isinstance(record, _More):  # lines of a record printed a poll ago
                out.write("\n".join(CONTINUATION + printable(m, TEXT_LIMIT)
                                    for m in record.more) + "\n")
                continue
            out.write(format_line(record, self.width, self.colour) + "\n")
        out.flush()


def _follow(folders: list[Path], wanted: str | None, printer: _Printer,
            tails: dict[Path, _Tail], shown: Iterable[str]) -> None:
    """Print new records until Ctrl-C: grown files, rotated files, new sources' files
    (``shown``: the sources whose files were printed already)."""
    seen = set(shown)
    while True:
        time.sleep(POLL_S)
        fresh: list[LogRecordLine] = []
        for source, paths in _sources(folders, wanted).items():
            for path in paths:
                if not path.name.endswith(".log"):
                    if source not in seen:  # a new source that rotated already: from its start
                        fresh.extend(r for r in _read_records(path, source) if printer.keep(r))
                elif path not in tails:
                    tails[path] = _Tail(path, source)  # a new replica's
            seen.add(source)
        for tail in tails.values():
            fresh.extend(r for r in tail.poll() if printer.keep(r))
        fresh.sort(key=lambda r: r.ts)
        printer.show(fresh)


def logs(
    graph: Annotated[str, typer.Argument(help="graph YAML file or graph name of the line")],
    source: Annotated[str | None, typer.Argument(
        help="only this agent (all its replicas), one replica AGENT\\[i], or supervisor")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="keep printing new lines (through rotation, and new "
        "replicas' files) until Ctrl-C")] = False,
    since: Annotated[str | None, typer.Option(
        "--since", help="only records from then on: 30s, 10m, 2h, 1d back, or an ISO time "
        "(2026-12-01T16:45, local unless it has an offset), or HH:MM[:SS] of today")] = None,
    lines: Annotated[int | None, typer.Option(
        "--lines", "-n", help="only the last N records (then, with -f, the new ones)")] = None,
    level: Annotated[str | None, typer.Option(
        "--level", help="only records at LEVEL or above (DEBUG, INFO, WARNING, ERROR, "
        "CRITICAL; raw output of a process counts as WARNING)")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="the state folder the line was run with (procgraph run "
        "--state-dir); default: from its run record, else the default state folder")] = None,
) -> None:
    """Print a line's log files (every replica and the supervisor), merged by time."""
    min_level = _wanted_level(level)
    start = None
    if since is not None:
        try:
            start = parse_since(since)
        except ValueError:
            raise fail(f"--since {printable(since, 50)!r}: give a duration (30s, 10m, 2h, "
                       "1d) or a time (2026-12-01T16:45, 16:45)") from None
    if lines is not None and lines < 0:
        raise fail(f"--lines {lines}: give 0 or more")
    folders, plan = find_log_dirs(graph, state_dir)
    _check_source(source, plan)
    shown = printable(plan.name if plan is not None else graph, 100)
    existing = [f for f in folders if f.is_dir()]
    if not existing:
        where = ", ".join(str(f) for f in folders)
        raise fail(f"no log folder of graph {shown!r}: looked in {where}; the line must have "
                   "run on this machine (procgraph run FILE) to write logs there (run with "
                   "--state-dir DIR: give --state-dir DIR; graph logs: {dir: ...}: give the "
                   "graph file)")
    sources = _sources(existing, source)
    if not sources and not follow:
        there = sorted(_sources(existing, None))
        listed = f"(there: {', '.join(there)})" if there else "(it is empty)"
        where = ", ".join(map(str, existing))
        if source is not None and plan is not None:  # a known agent that logged nothing yet
            typer.echo(f"no records of {printable(source, 100)!r} in {where} {listed}: it "
                       "has written nothing yet", err=True)
            return
        if source is not None:
            raise fail(f"no log files of {printable(source, 100)!r} in {where} {listed}: "
                       "give one of those")
        raise fail(f"no log files in {where} {listed}: the line must have run "
                   "(procgraph run FILE) to write them")
    width = max((len(s) for s in sources), default=0)
    printer = _Printer(min_level, width)
    tails = {p: _Tail(p, s) for s, ps in sources.items() for p in ps
             if p.name.endswith(".log")} if follow else {}
    try:
        records = (r for r in _merged(sources, start, tails)
                   if (start is None or r.ts >= start) and printer.keep(r))
        printer.show(deque(records, maxlen=lines) if lines is not None else records)
        if follow:
            if not sources:
                typer.echo(f"waiting for log files in {', '.join(map(str, existing))} ...",
                           err=True)
            _follow(existing, source, printer, tails, sources)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # procgraph logs ... | head
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        for tail in tails.values():
            if tail.fh is not None:
                tail.fh.close()


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(logs)
