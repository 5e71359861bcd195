"""The supervisor's terminal side: prefixed output that never crashes it, and stop signals.

- :class:`Console`: one line per call with a (coloured) ``name |`` prefix; when its output
  breaks (``procgraph run ... | head`` exited, the terminal closed) it drops further output,
  says so once on stderr, and never raises.
- :func:`install_stop_signals`: SIGINT, SIGTERM and SIGHUP handlers that are signal-safe: the
  interpreter only writes the signal number to a pipe (``signal.set_wakeup_fd``); a thread
  reads it and calls back outside the handler, where locks and printing are safe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import IO

_COLOURS = [36, 33, 35, 32, 34, 91, 96, 93, 95, 92, 94]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Console:
    """Prefixed lines to ``out`` (stdout by default), safe from any thread."""

    def __init__(self, out: IO[str] | None = None, colour: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.colour = self.out.isatty() if colour is None else colour
        self._lock = threading.Lock()
        self.broken = False

    def say(self, prefix: str, line: str, colour_index: int = 0) -> None:
        """Print one line with a (coloured) prefix; dropped once the output is broken."""
        if self.colour:
            code = _COLOURS[colour_index % len(_COLOURS)]
            text = f"\x1b[{code}m{prefix:>14} |\x1b[0m {line}"
        else:
            text = f"{prefix:>14} | {line}"
        with self._lock:
            if self.broken:
                return
            try:
                print(text, file=self.out, flush=True)
            except (OSError, ValueError):  # `| head` exited, terminal closed: never crash
                self._gone()

    def _gone(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError, ValueError):
            fd = self.out.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)  # so that the interpreter's last flush cannot fail either
            os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            print("procgraph run: output closed; the line runs on, its output is dropped",
                  file=sys.stderr, flush=True)


def install_stop_signals(on_signal: Callable[[str], None]) -> None:
    """Call ``on_signal(name)`` (from a thread) for each SIGINT, SIGTERM or SIGHUP.

    Call from the main thread. The Python-level handlers do nothing; the work happens in the
    thread, so a signal arriving while the main thread holds any lock cannot deadlock.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: None)

    def watch() -> None:
        while True:
            for signum in os.read(read_fd, 64):
                if signum in STOP_SIGNALS:
                    on_signal(signal.Signals(signum).name)

    threading.Thread(target=watch, name="signals", daemon=True).start()
