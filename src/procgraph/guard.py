"""The guard: ends a supervisor's replicas and brokers when the supervisor dies, by any cause.

:class:`Guard` starts one small process per supervisor (this file run as a script, standard
library only, in its own session so a terminal's Ctrl-C or SIGHUP does not reach it). The
supervisor writes to the guard's stdin one line per process it starts (``+ pid starttime
kind``) or reaps (``- pid``). The kernel closes that pipe when the supervisor process ends, a
``kill -9`` included, so the guard reads end-of-file and then stops every process still on its
list: SIGTERM to the replicas, after up to 1 s SIGTERM to the brokers, after another 0.5 s
SIGKILL to whatever is left: everything is gone within ~2 s. A process is only signalled while
its start time (``/proc/<pid>/stat``) is the one recorded, so a reused pid is never hit. On a
normal stop the supervisor has already stopped everything and the guard just exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

REPLICA = "replica"
BROKER = "broker"


def start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot; "" where unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


class Guard:
    """The supervisor's side: start the guard process, tell it what to end if we die."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._pipe: IO[bytes] | None = None

    def start(self, keep_fds: tuple[int, ...] = ()) -> Guard:
        """Start the guard process (once). It holds ``keep_fds`` open until it exits: the
        supervisor's lock file stays locked until its brokers are really gone."""
        if self.proc is None:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", __file__], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                pass_fds=keep_fds,
            )
            self._pipe = self.proc.stdin
        return self

    def _send(self, line: str) -> None:
        if self._pipe is None:
            return
        try:
            self._pipe.write(line.encode() + b"\n")
            self._pipe.flush()
        except (OSError, ValueError):  # the guard is gone: nothing left to tell
            self._pipe = None

    def watch(self, pid: int, kind: str = REPLICA) -> None:
        """End ``pid`` (a replica or a broker) if this supervisor dies before it."""
        self._send(f"+ {pid} {start_time(pid) or '-'} {kind}")

    def forget(self, pid: int) -> None:
        """``pid`` ended: never signal it (or a process that reuses the pid)."""
        self._send(f"- {pid}")

    def close(self) -> None:
        """A normal stop: everything is stopped already; let the guard exit."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.close()
            self._pipe = None
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


# -- the guard process -----------------------------------------------------------------------
def _signal(watched: dict[int, tuple[str, str]], kind: str, signum: int) -> None:
    for pid, (started, what) in watched.items():
        if what == kind and (started == "-" or start_time(pid) == started):
            with contextlib.suppress(OSError):
                os.kill(pid, signum)


def _running(pid: int, started: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and fields[19] == started


def _wait_gone(watched: dict[int, tuple[str, str]], kind: str | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any((kind is None or what == kind) and _running(pid, started)
                   for pid, (started, what) in watched.items()):
            return
        time.sleep(0.05)


def main() -> None:
    """Read the supervisor's list until end-of-file, then end what is still running."""
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    watched: dict[int, tuple[str, str]] = {}
    for raw in sys.stdin.buffer:
        words = raw.decode(errors="replace").split()
        with contextlib.suppress(ValueError, IndexError):
            if words[0] == "+":
                watched[int(words[1])] = (words[2], words[3])
            elif words[0] == "-":
                watched.pop(int(words[1]), None)
    if not watched:
        return
    _signal(watched, REPLICA, signal.SIGTERM)
    _wait_gone(watched, REPLICA, 1.0)
    _signal(watched, BROKER, signal.SIGTERM)
    _wait_gone(watched, None, 0.5)
    _signal(watched, REPLICA, signal.SIGKILL)
    _signal(watched, BROKER, signal.SIGKILL)


if __name__ == "__main__":
    main()
