"""Helpers for the supervisor lifecycle tests: ``procgraph run`` as a real process, /proc."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pgtest_procs import (  # noqa: F401  (re-exported for the supervisor tests)
    Run,
    alive,
    cmdline,
    descendants,
    env,
    kill_family,
    kill_pid,
)

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


def wait_gone(pids: dict[int, str], timeout_s: float) -> dict[int, str]:
    """Wait up to ``timeout_s`` for every pid to end; returns those still alive."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = {p: c for p, c in pids.items() if alive(p)}
        if not left:
            return {}
        time.sleep(0.05)
    return {p: c for p, c in pids.items() if alive(p)}
