"""Importing the modules a graph names: from beside the graph, bounded in time, never exiting.

The graph's folder is *appended* to ``sys.path``, so an installed module always wins over a
file of the same name beside the graph (a ``cv2.py`` there is never what ``import cv2``
gets); :func:`shadowed_modules` names such files so the user can rename them.

:func:`import_module` gives up on an import that runs past its timeout
(:data:`IMPORT_TIMEOUT_S`, or ``$PROCGRAPH_IMPORT_TIMEOUT_S`` through
:mod:`procgraph.settings` where it has that field) and raises :class:`ImportTimeout`
saying where the import was. In the main thread a ``SIGALRM`` timer interrupts the import
where it is, so modules are imported by the main thread as usual; in any other thread the
import runs in a daemon thread, which is left behind when it does not finish.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import itertools
import logging
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procgraph.settings import load_settings

#: how long importing one agent module may take, in seconds (unless the settings say)
IMPORT_TIMEOUT_S = 30.0
#: the most entries of a graph's folder looked at by :func:`shadowed_modules`
MAX_SCANNED = 1000

_log = logging.getLogger("procgraph.graph")
_THIS = os.path.normcase(os.path.abspath(__file__))


class ImportTimeout(BaseException):
    """An import ran past its timeout.

    A BaseException, so that the module's own ``except Exception:`` does not swallow it;
    ``at`` is ``file:line`` where the import was when it was given up.
    """

    def __init__(self, timeout_s: float, at: str = "an unknown place") -> None:
        super().__init__(f"the import did not finish within {timeout_s:g} s (at {at})")
        self.timeout_s = timeout_s
        self.at = at


def import_timeout_s() -> float:
    """The import timeout: ``import_timeout_s`` of the settings if set, else the constant."""
    value = getattr(load_settings(), "import_timeout_s", None)
    return float(value) if value else IMPORT_TIMEOUT_S


def _where(frame: types.FrameType | None) -> str:
    """``file:line`` of the innermost frame that is neither importlib's nor this module's."""
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith("<frozen") and os.path.normcase(name) != _THIS:
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return "an unknown place"


def _innermost(tb: types.TracebackType | None) -> types.FrameType | None:
    frame = None
    while tb is not None:
        frame, tb = tb.tb_frame, tb.tb_next
    return frame


def import_module(name: str, timeout_s: float) -> types.ModuleType:
    """``importlib.import_module(name)``, given up after ``timeout_s`` (ImportTimeout).

    Any other exception of the import (SystemExit included) is raised as it is.
    """
    if name in sys.modules or threading.current_thread() is not threading.main_thread():
        return importlib.import_module(name) if name in sys.modules else \
            _import_in_thread(name, timeout_s)
    importing = [True]

    def on_alarm(signum: int, frame: types.FrameType | None) -> None:
        if importing[0]:
            raise ImportTimeout(timeout_s)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    pending_s, interval_s = signal.setitimer(signal.ITIMER_REAL, timeout_s)
    started = time.monotonic()
    try:
        module = importlib.import_module(name)
        importing[0] = False
        return module
    except ImportTimeout as exc:
        exc.at = _where(_innermost(exc.__traceback__))
        raise
    finally:
        importing[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if pending_s > 0:  # someone else's timer was running: give it back
            left = max(pending_s - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, interval_s)


def _import_in_thread(name: str, timeout_s: float) -> types.ModuleType:
    """Import in a daemon thread and wait at most ``timeout_s`` for it."""
    done: list[types.ModuleType] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            done.append(importlib.import_module(name))
        except BaseException as exc:  # raised again in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=target, name=f"procgraph-import-{name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        frame = sys._current_frames().get(thread.ident or -1)
        raise ImportTimeout(timeout_s, _where(frame))
    if failed:
        raise failed[0]
    return done[0]


def _module_name(entry: os.DirEntry[str]) -> str | None:
    """The top-level module a folder entry is (``x.py`` or a package ``x/``), or None."""
    try:
        if entry.name.endswith(".py") and entry.is_file():
            name = entry.name[:-3]
        elif entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
            name = entry.name
        else:
            return None
    except OSError:
        return None
    return name if name.isidentifier() and not name.startswith("__") else None


def _installed(name: str, folder: Path, path: list[str]) -> str | None:
    """Where an installed module ``name`` (not the one in ``folder``) is, or None."""
    for finder in sys.meta_path:
        try:
            if finder is importlib.machinery.PathFinder:
                spec = importlib.machinery.PathFinder.find_spec(name, path)
            else:
                find: Any = getattr(finder, "find_spec", None)
                spec = find(name, None) if find is not None else None
        except (ImportError, ValueError, OSError):
            continue
        if spec is None:
            continue
        origin = spec.origin or next(iter(spec.submodule_search_locations or []), None)
        if origin in (None, "built-in", "frozen"):
            return origin or "a namespace package"
        if Path(origin).resolve().parent not in (folder, folder / name):
            return origin
    return None


def shadowed_modules(folder: Path) -> list[str]:
    """One line per module beside a graph that has the name of an installed module.

    Such a file is not what ``import NAME`` gets (the graph's folder comes last on
    ``sys.path``). At most :data:`MAX_SCANNED` entries of the folder are looked at.
    """
    folder = folder.resolve()
    try:
        with os.scandir(folder) as scan:
            entries = list(itertools.islice(scan, MAX_SCANNED))
    except OSError:
        return []
    path = [p for p in sys.path if Path(p or ".").resolve() != folder]
    lines = []
    for entry in sorted(entries, key=lambda e: e.name):
        name = _module_name(entry)
        origin = _installed(name, folder, path) if name is not None else None
        if origin is not None:
            lines.append(f"{entry.path} has the name of the installed module {name!r} "
                         f"({origin}), so `import {name}` does not import it; fix: rename "
                         f"{entry.name}")
    return lines


def add_graph_dir(folder: Path, warn: Callable[[str], None] | None = None) -> None:
    """Append a graph's folder to ``sys.path`` (once); warn about modules hidden there.

    ``warn`` gets each line of :func:`shadowed_modules` (default: a warning of the
    ``procgraph.graph`` logger); replicas started by the supervisor do not warn again.
    """
    entry = str(folder.resolve())
    if entry in sys.path:
        return
    sys.path.append(entry)
    if load_settings().supervised:
        return
    for line in shadowed_modules(folder):
        (warn or _log.warning)(line)
