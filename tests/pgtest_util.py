"""Helpers for tests (a module of its own: two conftest.py files cannot both be imported)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from procgraph.runtime import AgentRunner


def wait_for(cond: Callable[[], object], timeout_s: float = 20.0, what: str = "condition"):
    """Poll ``cond`` until truthy; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def sink_graph(tmp_path: Path, name: str, agents_source: str, agent: str) -> Path:
    """A graph ``name`` in ``tmp_path``: pgtest_agents' Numbers as ``src`` (sending nothing:
    the test writes its stream) and ``<name>_agents:<agent>`` (from ``agents_source``) as
    ``sink``, reading ``src.out`` from the start."""
    shutil.copy(Path(__file__).parent / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    (tmp_path / f"{name}_agents.py").write_text(agents_source)
    graph = tmp_path / f"{name}.yaml"
    graph.write_text(
        f"name: {name}\nbrokers: {{main: {{url: embedded}}}}\nagents:\n"
        '  src: {class: "pgtest_agents:Numbers", params: {count: 0}}\n'
        f'  sink: {{class: "{name}_agents:{agent}", inputs: {{items: {{from: src.out, '
        'start: "0"}}}\n')
    return graph


@contextmanager
def hosted_replica(graph: Path, agent: str, url: str,
                   thread_name: str = "handler") -> Iterator[AgentRunner]:
    """Replica 0 of ``agent`` run by an AgentRunner in a thread of this process (no
    supervisor), stopped and joined on the way out."""
    from procgraph.graph import load_graph
    from procgraph.runtime import AgentRunner

    runner = AgentRunner(load_graph(graph), agent, 0, {"main": url})
    thread = threading.Thread(target=runner.run, name=thread_name, daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stop_event.set()
        thread.join(10)
    assert not thread.is_alive()
