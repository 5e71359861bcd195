"""The supervisor's terminal side: prefixed output that never crashes it, and stop signals.

- :class:`Console`: one line per call with a (coloured) ``name |`` prefix; when its output
  breaks (``procgraph run ... | head`` exited, the terminal closed) it drops further output,
  says so once on stderr, and never raises. Every line is passed through
  :func:`procgraph.safetext.printable` (controls and newlines escaped, length capped), so
  text from a replica or a message cannot forge a line, move the cursor or recolour it.
- :func:`read_lines`: a replica's output as such safe lines, read in bounded pieces (a
  10 MB line is never held whole; it is cut at :data:`LINE_LIMIT` with its size).
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
from collections.abc import Callable, Iterator
from typing import IO

from procgraph.safetext import printable

#: the cap of one forwarded line of a replica's output, in characters
LINE_LIMIT = 2000
#: the cap of any line the console prints (above LINE_LIMIT: a cut line is not cut again)
SAY_LIMIT = 2 * LINE_LIMIT
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
        """Print one line with a (coloured) prefix; dropped once the output is broken.

        ``prefix`` and ``line`` are printed escaped and capped (:func:`printable`).
        """
        prefix, line = printable(prefix, 64), printable(line, SAY_LIMIT)
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


def read_lines(stream: IO[bytes], limit: int = LINE_LIMIT) -> Iterator[str]:
    """Each line of ``stream`` (a child's stdout) as printable text, until it ends.

    Trailing whitespace is dropped, controls are escaped and invalid UTF-8 shows as
    ``\\xNN``; a line longer than ``limit`` is cut and ends with
    ``...[cut, N bytes in all]``. At most a few times ``limit`` bytes are held at once.
    """
    size = 4 * limit + 4  # bytes read at a time: all that printable() looks at
    while raw := stream.readline(size):
        total, last = len(raw), raw
        while not last.endswith(b"\n"):  # an over-long line: count the rest, keep its start
            last = stream.readline(size)
            if not last:
                break
            total += len(last)
        if total == len(raw):
            yield printable(raw.rstrip(), limit)
        else:
            total -= last.endswith(b"\n")  # the size of the line, its newline not counted
            head = printable(raw, len(raw) * 4 + 4)  # escaped only; cut here
            yield f"{head[:limit]}...[cut, {total} bytes in all]"


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
