"""Helpers for the supervisor lifecycle tests: ``procgraph run`` as a real process, /proc."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pgtest_procs import alive, cmdline, descendants  # noqa: F401  (re-exported)

TESTS = Path(__file__).parent.parent

AGENTS = '''
from procgraph import Agent, Input, Output
from pgtest_agents import Item


class Finite(Agent):
    """Sends ``count`` items k0..k<count-1> as fast as it can, then returns from run()."""

    class Params(Agent.Params):
        count: int = 300

    out = Output(Item)

    def run(self) -> None:
        start = int(self.state.get("next", 0))
        for n in range(start, self.params.count):
            if not self.running:
                return
            self.out.send(Item(n=n, key=f"k{n}"))
            self.state.put("next", n + 1)
'''


def write_graph(folder: Path, text: str, name: str = "g.yaml") -> Path:
    """The graph file, with tests/pgtest_agents.py and the agents above beside it."""
    shutil.copy(TESTS / "pgtest_agents.py", folder / "pgtest_agents.py")
    (folder / "sv_agents.py").write_text(AGENTS)
    graph = folder / name
    graph.write_text(text)
    return graph


def env() -> dict[str, str]:
    """The environment of a ``procgraph`` run in a test: unbuffered, no inherited --redis."""
    out = dict(os.environ)
    out.pop("PROCGRAPH_REDIS", None)
    out["PYTHONUNBUFFERED"] = "1"
    return out


class Run:
    """``procgraph run`` in its own session, its output collected line by line."""

    def __init__(self, graph: Path, *args: str, state_dir: Path | None = None) -> None:
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
    """SIGKILL ``pid`` and every descendant of it."""
    for child in descendants(pid):
        kill_pid(child)
    kill_pid(pid)


def wait_gone(pids: dict[int, str], timeout_s: float) -> dict[int, str]:
    """Wait up to ``timeout_s`` for every pid to end; returns those still alive."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = {p: c for p, c in pids.items() if alive(p)}
        if not left:
            return {}
        time.sleep(0.05)
    return {p: c for p, c in pids.items() if alive(p)}
