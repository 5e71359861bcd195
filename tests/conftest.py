"""Shared fixtures: real broker processes on free loopback ports, graphs run for real.

Tests live in folders mirroring the package (tests/graph/, tests/cli/, tests/agents/hmi/, ...),
with no ``__init__.py``; they import their helpers as ``from pgtest_util import ...``
(pyproject's ``pythonpath = ["tests"]``). ``pgtest_skips`` makes a skip fail the run under
``PROCGRAPH_FAIL_ON_SKIP=1`` (CI) unless tests/skip_allowlist.txt lists it.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import redis

from pgtest_util import wait_for  # noqa: F401  (re-exported for tests)
from procgraph.brokers import EmbeddedBroker
from procgraph.graph import load_graph
from procgraph.supervisor import Supervisor
from procgraph.transport.shmring import RING_PREFIX, SHM_DIR

pytest_plugins = ["pgtest_skips", "pytester"]

TESTS = Path(__file__).parent
BROKER_KINDS = ["valkey", "redis"]


@pytest.fixture(scope="session", autouse=True)
def _shm_files_removed() -> Iterator[None]:
    """Remove the shared-memory files the session's tests left in /dev/shm (only files new
    since the session started; every line is stopped by then): readers' presence files,
    which a replica hosted without a supervisor (``AgentRunner`` in a thread) makes and, as
    a replica must (its siblings share it), leaves; and rings a stopped line keeps because
    frames in them were never read (a test's HMI previews, say), as it must for a restart."""
    before = set(SHM_DIR.glob(f"{RING_PREFIX}*"))
    yield
    for path in set(SHM_DIR.glob(f"{RING_PREFIX}*")) - before:
        with suppress(OSError):
            path.unlink()


@pytest.fixture(autouse=True)
def _state_folder(tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's own state folder root ($XDG_STATE_HOME, inherited by `procgraph run`
    subprocesses): a supervisor's durable brokers never write under ~/.local/state, never
    reload another test's data and never meet another run's lock."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))


def _have_redis_server() -> bool:
    return shutil.which("redis-server") is not None


@pytest.fixture(scope="session", params=BROKER_KINDS)
def broker_server(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    """A real broker process per kind (valkey from the wheel; Debian redis-server)."""
    kind = request.param
    if kind == "redis" and not _have_redis_server():
        if os.environ.get("PROCGRAPH_REQUIRE_REDIS_SERVER") == "1":
            pytest.fail("redis-server is required here (apt-get install redis-server)")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    with EmbeddedBroker(kind=kind) as b:
        yield b


@pytest.fixture
def broker(broker_server: EmbeddedBroker) -> EmbeddedBroker:
    """The session broker, emptied before each test."""
    redis.Redis.from_url(broker_server.url).flushall()
    return broker_server


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[EmbeddedBroker]:
    """One valkey broker for tests that need a broker but not both kinds."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def valkey(valkey_server: EmbeddedBroker) -> EmbeddedBroker:
    """The valkey session broker, emptied before each test."""
    redis.Redis.from_url(valkey_server.url).flushall()
    return valkey_server


@pytest.fixture
def run_graph(tmp_path: Path) -> Callable[..., object]:
    """Run a YAML graph (with tests/pgtest_agents.py beside it) under a real supervisor."""

    @contextmanager
    def runner(yaml_text: str, redis_url: str | None = None) -> Iterator[Supervisor]:
        shutil.copy(TESTS / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
        graph = tmp_path / "graph.yaml"
        graph.write_text(yaml_text)
        plan = load_graph(graph)
        log = io.StringIO()
        sup = Supervisor(plan, redis_url=redis_url, out=log, colour=False)
        sup.start_in_thread()
        try:
            yield sup
        finally:
            sup.shutdown()
            (tmp_path / "supervisor.log").write_text(log.getvalue())
            print(log.getvalue()[-4000:])

    return runner
