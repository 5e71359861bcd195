"""Process helpers for tests: ``procgraph run`` as a real process; descendants, liveness (/proc)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def _ppids() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(pid: int) -> dict[int, str]:
    """Every descendant of ``pid`` (pid -> command line), from /proc."""
    parents = _ppids()
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = cmdline(child)
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ("" when gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie is not alive)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def env() -> dict[str, str]:
    """The environment of a ``procgraph`` run in a test: unbuffered, no inherited --redis."""
    out = dict(os.environ)
    out.pop("PROCGRAPH_REDIS", None)
    out["PYTHONUNBUFFERED"] = "1"
    return out


class Collected:
    """A ``procgraph`` command as a process, its output (stdout and stderr) collected line by
    line; :meth:`stop` sends SIGINT (Ctrl-C), then kills after ``timeout_s``."""

    def __init__(self, args: list[str], environ: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "procgraph", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env() if environ is None else environ)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        """Everything printed so far."""
        return "\n".join(self.lines)

    def stop(self, timeout_s: float = 10) -> int:
        """Ctrl-C if still running, wait (kill after ``timeout_s``); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


class Run:
    """``procgraph run`` in its own session, its output collected line by line."""

    def __init__(self, graph: Path, *args: str, state_dir: Path | None = None) -> None:
        self.graph = graph
        extra = ["--state-dir", str(state_dir)] if state_dir is not None else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "procgraph", "run", str(graph), *extra, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        """Everything printed so far."""
        with self._cond:
            return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout_s: float = 30) -> re.Match[str]:
        """The first line matching ``pattern``; fails the test after ``timeout_s``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    pytest.fail(f"no line matching {rx.pattern!r}; output:\n" + "\n".join(
                        self.lines))
                self._cond.wait(min(left, 0.5))

    def ctrl_c(self) -> None:
        """SIGINT to its process group, as Ctrl-C in its terminal would send."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self, timeout_s: float = 30) -> int:
        """Wait for the exit code; kill the whole family and fail after ``timeout_s``."""
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            kill_family(self.proc.pid)
            self.proc.wait()
            pytest.fail("procgraph run did not stop; output:\n" + self.output)
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code

    def stop(self) -> None:
        """End the run if the test did not (SIGTERM, then its whole family)."""
        if self.proc.poll() is None:
            family = descendants(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for pid in family:
                kill_pid(pid)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self._reader.join(5)
            self.proc.stdout.close()


def kill_pid(pid: int) -> None:
    """SIGKILL one process this test started (directly or through its supervisor)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def kill_family(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant of it, all frozen first (SIGSTOP): a supervisor
    that saw its broker killed first would start another one, orphaned once the supervisor
    dies too, holding the line's data folder (seen in CI), and a fork server could fork."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    family: set[int] = set()
    while True:  # until no new descendant shows up (one forked before it was frozen)
        new = set(descendants(pid)) - family
        if not new:
            break
        for child in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
        family |= new
    for child in family:
        kill_pid(child)
    kill_pid(pid)
