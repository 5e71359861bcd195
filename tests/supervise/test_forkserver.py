"""The fork server (procgraph.forkserver): replicas forked, their output, exit codes, signals,
env and cwd as spawned ones; a dead or refusing server makes the supervisor spawn, saying so;
the off switch. Real processes, a real broker."""

from __future__ import annotations

import io
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgtest_procs import cmdline
from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.graph import load_graph
from procgraph.replicas import ForkedHandle, ProcessHandle
from procgraph.settings import Settings
from procgraph.supervisor import Supervisor

AGENTS = '''
import os
import time

import numpy as np

from procgraph import Agent, Output
from procgraph.examples import Reading

WARM = np.random.random()  # numpy's global generator seeded in the fork server already

class Teller(Agent):
    """Prints who it is; with ``code`` > 0 exits with it after ``after_s`` seconds."""

    class Params(Agent.Params):
        code: int = 0
        after_s: float = 0.3

    out = Output(Reading)

    def run(self) -> None:
        print(f"teller {self.context.agent}[{self.context.replica}] pid={os.getpid()} "
              f"ppid={os.getppid()} cwd={os.getcwd()} "
              f"restarts={os.environ.get('PROCGRAPH_RESTARTS')} "
              f"mark={os.environ.get('FS_MARK')} rand={np.random.randint(1 << 30)}",
              flush=True)
        started = time.monotonic()
        while self.running:
            if self.params.code and time.monotonic() - started > self.params.after_s:
                os._exit(self.params.code)
            self.sleep(0.05)
'''

THREADED = '''
import threading
import time

from fs_agents import Teller  # noqa: F401

threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
'''

GRAPH = """
name: forks
brokers: {main: {url: embedded}}
agents:
  teller: {class: "fs_agents:Teller", replicas: 2}
  quitter: {class: "fs_agents:Teller", params: {code: 3}, restart: on-failure}
"""

ONE = """
name: forks1
brokers: {main: {url: embedded}}
agents:
  teller: {class: "MODULE:Teller"}
"""

_SAID = re.compile(r"teller (\w+)\[(\d)\] pid=(\d+) ppid=(\d+) cwd=(\S+) restarts=(\d+) "
                   r"mark=(\S+) rand=(\d+)")


def _said(out: io.StringIO) -> list[tuple[str, ...]]:
    return _SAID.findall(out.getvalue())


@pytest.fixture
def line(valkey: EmbeddedBroker, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Supervisor, io.StringIO]]:
    """The forks graph running under a supervisor (fork server on), from another cwd."""
    (tmp_path / "fs_agents.py").write_text(AGENTS)
    graph = tmp_path / "forks.yaml"
    graph.write_text(GRAPH)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("FS_MARK", "m42")
    out = io.StringIO()
    sup = Supervisor(load_graph(graph), redis_url=valkey.url, out=out, colour=False,
                     state_dir=tmp_path / "state", console_level="info")
    sup.use_fork_server = True
    sup.start_in_thread(0.05)
    try:
        yield sup, out
    finally:
        sup.shutdown()
        print(out.getvalue()[-4000:])


def test_replicas_are_forked_like_spawned_processes(
        line: tuple[Supervisor, io.StringIO], tmp_path: Path) -> None:
    sup, out = line
    assert sup._forks is not None
    server = sup._forks.pid
    wait_for(lambda: len({(a, r) for a, r, *_ in _said(out) if a == "teller"}) == 2,
             what="both tellers' lines")
    tellers = [r for r in sup.replicas if r.agent.name == "teller"]
    assert all(isinstance(r.proc, ForkedHandle) for r in tellers)
    said = {int(r): s for a, r, *s in _said(out) if a == "teller"}
    for r in tellers:
        pid, ppid, cwd, restarts, mark, _ = said[r.index]
        assert r.pid == int(pid) and int(ppid) == server  # its output came through its pipe
        assert cwd == str(tmp_path / "work") and restarts == "0" and mark == "m42"
        assert cmdline(int(pid)).split()[-4:] == ["agent", sup.plan.file, "teller",
                                                  str(r.index)]
    assert said[0][-1] != said[1][-1], "numpy's global generator must differ per replica"
    # the exit code comes back and the replica is restarted with its new env
    wait_for(lambda: "quitter[0] exited with code 3" in out.getvalue(), what="exit code 3")
    wait_for(lambda: any(a == "quitter" and s[3] == "1" for a, _, *s in _said(out)),
             what="the restarted quitter (restarts=1)")
    # kill by pid (through the pidfd), reported as a signal like Popen's returncode
    victim = tellers[0]
    assert victim.proc is not None
    victim.proc.kill()
    wait_for(lambda: "teller[0] exited with code -9" in out.getvalue(), what="code -9")
    wait_for(lambda: victim.heartbeat_seen and isinstance(victim.proc, ForkedHandle),
             what="teller[0] forked again")
    assert "warning" not in out.getvalue()


def test_a_dead_fork_server_makes_the_supervisor_spawn(
        line: tuple[Supervisor, io.StringIO]) -> None:
    sup, out = line
    wait_for(lambda: all(r.heartbeat_seen for r in sup.replicas), what="every heartbeat")
    assert sup._forks is not None
    server = sup._forks.pid
    tellers = [r for r in sup.replicas if r.agent.name == "teller"]
    old = {r.pid for r in tellers}
    os.kill(server, signal.SIGKILL)
    # its replicas see their parent gone and exit; they come back as spawned processes
    wait_for(lambda: "the fork server (pid" in out.getvalue(), what="the warning")
    wait_for(lambda: all(r.heartbeat_seen and isinstance(r.proc, ProcessHandle)
                         for r in tellers), timeout_s=40, what="tellers spawned")
    assert not old & {r.pid for r in tellers}
    assert all(int(s[1]) == os.getpid() for a, _, *s in _said(out)[-2:] if a == "teller")
    assert sup._forks is None


def _one(valkey: EmbeddedBroker, tmp_path: Path, module: str) -> tuple[Supervisor, io.StringIO]:
    (tmp_path / "fs_agents.py").write_text(AGENTS)
    (tmp_path / "fs_threaded.py").write_text(THREADED)
    graph = tmp_path / "one.yaml"
    graph.write_text(ONE.replace("MODULE", module))
    out = io.StringIO()
    return Supervisor(load_graph(graph), redis_url=valkey.url, out=out, colour=False,
                      state_dir=tmp_path / "state", console_level="info"), out


def test_a_module_that_starts_a_thread_is_not_forked(valkey: EmbeddedBroker,
                                                     tmp_path: Path) -> None:
    sup, out = _one(valkey, tmp_path, "fs_threaded")
    sup.use_fork_server = True
    sup.start_in_thread(0.05)
    try:
        wait_for(lambda: sup.replicas[0].heartbeat_seen, timeout_s=30, what="a heartbeat")
        assert isinstance(sup.replicas[0].proc, ProcessHandle)
        assert re.search(r"warning: the fork server \(pid \d+\) cannot start teller\[0\]: "
                         r"\d+ threads after importing the graph's agent modules",
                         out.getvalue()), out.getvalue()
    finally:
        sup.shutdown()


def test_the_off_switch(valkey: EmbeddedBroker, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    sup, out = _one(valkey, tmp_path, "fs_agents")
    if "forkserver" in Settings.model_fields:
        monkeypatch.setenv("PROCGRAPH_FORKSERVER", "0")
    else:  # until settings has the field (/work/diffs-12/D-settings.md): the attribute
        sup.use_fork_server = False
    sup.start_in_thread(0.05)
    try:
        wait_for(lambda: sup.replicas[0].heartbeat_seen, timeout_s=30, what="a heartbeat")
        assert sup._forks is None and isinstance(sup.replicas[0].proc, ProcessHandle)
        wait_for(lambda: _said(out), what="its line")
        assert int(_said(out)[0][3]) == os.getpid()
        assert "fork server" not in out.getvalue()
    finally:
        sup.shutdown()


def test_a_replica_gone_with_no_exit_code_reported_is_not_waited_for_forever(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor's stop waits for each replica's exit code from the fork server; one
    whose process is gone (its pidfd readable) but whose code never comes is taken as -1 after
    EXIT_REPORT_S, said on the console, instead of hanging the stop (seen once in CI: a stop
    that never returned after SIGKILL). A real process; a server that reports nothing."""
    import subprocess
    import sys

    from procgraph import forkserver

    class SilentServer:
        gone = False
        said: list[str] = []

        def say(self, line: str) -> None:
            self.said.append(line)

    monkeypatch.setattr(forkserver, "EXIT_REPORT_S", 0.3)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server = SilentServer()
    pidfd = os.pidfd_open(child.pid)
    proc = forkserver.ForkedProcess(server, child.pid, pidfd, io.BytesIO())  # type: ignore[arg-type]
    try:
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -1
        assert server.said and f"pid {child.pid} ended" in server.said[0]
    finally:
        child.kill()
        child.wait()


def test_the_exit_report_closing_the_pidfd_never_breaks_a_poll() -> None:
    """The reader thread closes a replica's pidfd when its exit code comes while the
    supervisor's threads poll and signal through it (seen in CI: a stop that raised EBADF out
    of select). Thousands of real pidfds, each closed by one thread while two others poll and
    signal it; no call may raise."""
    import subprocess
    import sys
    import threading

    from procgraph import forkserver

    class QuietServer:
        gone = False

        def say(self, line: str) -> None:
            pass

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    errors: list[BaseException] = []

    def hammer(proc: forkserver.ForkedProcess, start: threading.Event) -> None:
        start.wait()
        try:
            while proc.returncode is None:
                proc.poll()
                proc.send_signal(0)
            proc.poll()
        except BaseException as exc:
            errors.append(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two bytecodes: the race shows
    try:
        _race(forkserver, QuietServer, child.pid, hammer, errors)
    finally:
        sys.setswitchinterval(switch)
    assert not errors, f"{len(errors)} calls raised: {errors[0]!r}"


def _race(forkserver: Any, server: Any, pid: int, hammer: Any,
          errors: list[BaseException]) -> None:
    import random
    import threading
    import time

    for _ in range(1000):
        proc = forkserver.ForkedProcess(server(), pid, os.pidfd_open(os.getpid()),
                                        io.BytesIO())
        start = threading.Event()
        threads = [threading.Thread(target=hammer, args=(proc, start)) for _ in range(2)]
        for t in threads:
            t.start()
        start.set()
        time.sleep(random.random() * 1e-4)  # the pollers get going first
        proc._set(0)
        for t in threads:
            t.join(5)
        if errors:
            break
