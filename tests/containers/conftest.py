"""A private Docker engine for the container tests, and the agent image built in it.

``docker_engine`` (session) starts ``dockerd`` with its own ``--data-root``, ``--exec-root``,
unix socket, pid file and bridge (``pgdock<N>``, 172.31.250.0/24 unless
``$PROCGRAPH_DOCKER_BRIDGE_CIDR``), waits for it and yields a :class:`DockerEngine` with a
docker SDK client. At teardown, even when a test failed, it removes every container and
network of the engine, stops dockerd (and the containerd it started), deletes the bridges
that appeared, deletes the iptables rules and chains that were not there before (filter and
nat) and restores ``ip_forward`` and the FORWARD policy.

``$PROCGRAPH_DOCKER_HOST`` (e.g. ``unix:///run/docker.sock``) uses that engine instead and
manages nothing. Without dockerd, root or the docker SDK the tests skip with the reason;
with ``PROCGRAPH_REQUIRE_DOCKER=1`` (CI) they fail.

``base_image`` (session) imports the cached debootstrap tarball of tools/make_base_image.sh
(made on the first run, ~1 min) as ``procgraph/base:bookworm``; ``agent_image`` builds
deploy/Dockerfile for a small graph folder with its own agent module and a model.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIRE_ENV = "PROCGRAPH_REQUIRE_DOCKER"
BASE_TAG = "procgraph/base:bookworm"
TABLES = ("filter", "nat")
START_TIMEOUT_S = 30.0


def _unavailable(reason: str) -> None:
    """Skip (or fail under PROCGRAPH_REQUIRE_DOCKER=1) for a missing engine."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: a missing engine fails)")
    pytest.skip(reason)


def _iptables_rules() -> dict[str, list[str]]:
    """``iptables -t T -S`` of each table (empty when iptables is missing)."""
    rules: dict[str, list[str]] = {}
    for table in TABLES:
        out = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True,
                             check=False)
        rules[table] = out.stdout.splitlines() if out.returncode == 0 else []
    return rules


def _nft_tables() -> set[str] | None:
    """``ip filter``, ``ip nat``, ... of nftables; None without nft."""
    if shutil.which("nft") is None:
        return None
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return None
    return {ln.removeprefix("table ").strip() for ln in out.stdout.splitlines() if ln.strip()}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         check=False).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


@dataclass
class HostNetState:
    """What dockerd changes on the host, taken before it starts; :meth:`restore` undoes it."""

    ip_forward: str
    forward_policy: str
    rules: dict[str, list[str]]
    links: set[str]
    nft_tables: set[str] | None
    problems: list[str] = field(default_factory=list)

    @classmethod
    def take(cls) -> HostNetState:
        """The host's state now."""
        tables = _nft_tables()  # before iptables -S, which makes empty tables
        rules = _iptables_rules()
        policy = next((ln.split()[2] for ln in rules["filter"] if ln.startswith("-P FORWARD ")),
                      "ACCEPT")
        return cls(ip_forward=Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
                   forward_policy=policy, rules=rules, links=_links(), nft_tables=tables)

    def _run(self, *args: str) -> None:
        out = subprocess.run(args, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            self.problems.append(f"{shlex.join(args)}: {out.stderr.strip()}")

    def restore(self) -> list[str]:
        """Delete new rules, chains and links; restore ip_forward and the FORWARD policy."""
        now = _iptables_rules()
        for table in TABLES:
            before = set(self.rules[table])
            new_rules = [ln for ln in now[table] if ln.startswith("-A ") and ln not in before]
            for line in reversed(new_rules):
                self._run("iptables", "-t", table, "-D", *shlex.split(line)[1:])
            for line in now[table]:
                if line.startswith("-N ") and line not in before:
                    self._run("iptables", "-t", table, "-F", line.split()[1])
            for line in now[table]:
                if line.startswith("-N ") and line not in before:
                    self._run("iptables", "-t", table, "-X", line.split()[1])
        self._run("iptables", "-P", "FORWARD", self.forward_policy)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(self.ip_forward + "\n")
        for link in sorted(_links() - self.links):
            self._run("ip", "link", "delete", link)
        if self.nft_tables is not None:  # iptables-nft: drop the tables that were not there
            for table in sorted((_nft_tables() or set()) - self.nft_tables):
                family, name = table.split()
                if family == "ip" and name in TABLES and all(
                        ln.startswith("-P ") and ln.endswith(" ACCEPT")
                        for ln in _iptables_rules()[name]):
                    self._run("nft", "delete", "table", family, name)
        return self.problems


@dataclass
class DockerEngine:
    """A running engine: its URL (``unix://...``), a docker SDK client, its dockerd (if ours)."""

    url: str
    client: Any  # docker.DockerClient
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (docker CLI, docker-compose, procgraph) of this engine."""
        return {**os.environ, "DOCKER_HOST": self.url}


def _start_dockerd(root: Path, bridge: str, cidr: str) -> tuple[subprocess.Popen[bytes], Path]:
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", cidr, "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    log = root / "dockerd.log"
    args = ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
            "-H", f"unix://{root}/docker.sock", "--pidfile", str(root / "dockerd.pid"),
            "--bridge", bridge, "--log-level", "warn"]
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process, log


def _stop_dockerd(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # dockerd stops its containers and its containerd
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=5)


def _clean_engine(client: Any) -> None:
    """Remove every container and user network of the engine."""
    for container in client.containers.list(all=True):
        container.remove(force=True)
    client.networks.prune()


LOCK_FILE = Path(tempfile.gettempdir()) / "procgraph-private-dockerd.lock"
LOCK_WAIT_S = 300.0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so that the fixture's teardown runs


def _engine_lock() -> IO[str]:
    """Hold the host-wide lock of private engines (another session's dockerd: wait)."""
    handle = LOCK_FILE.open("a")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                pytest.fail(f"another private dockerd held {LOCK_FILE} for {LOCK_WAIT_S:.0f} s")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd (or ``$PROCGRAPH_DOCKER_HOST``) and a docker SDK client for it."""
    try:
        import docker
    except ImportError:
        _unavailable("the docker SDK is not installed: pip install docker")
    given = os.environ.get("PROCGRAPH_DOCKER_HOST")
    if given:
        client = docker.DockerClient(base_url=given, timeout=300)
        client.ping()
        yield DockerEngine(url=given, client=client)
        client.close()
        return
    if shutil.which("dockerd") is None:
        _unavailable("dockerd not installed: apt-get install -y docker.io")
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        _unavailable("a private dockerd needs root and iptables")
    lock = _engine_lock()  # one private dockerd at a time: they share the DOCKER chains
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():  # `timeout` still cleans up
        signal.signal(signal.SIGTERM, _interrupt)
    root = Path(tempfile.mkdtemp(prefix="pgdock-"))  # short: containerd socket paths
    bridge = f"pgdock{os.getpid() % 10000}"
    cidr = os.environ.get("PROCGRAPH_DOCKER_BRIDGE_CIDR", "172.31.250.1/24")
    state = HostNetState.take()
    process: subprocess.Popen[bytes] | None = None
    client = None
    try:
        process, log = _start_dockerd(root, bridge, cidr)
        url = f"unix://{root}/docker.sock"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"dockerd exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                client = docker.DockerClient(base_url=url, timeout=300)
                client.ping()
                break
            except Exception:
                if client is not None:
                    client.close()
                    client = None
                if time.monotonic() > deadline:
                    pytest.fail(f"dockerd did not answer in {START_TIMEOUT_S:.0f} s:\n"
                                f"{log.read_text()[-3000:]}")
                time.sleep(0.1)
        yield DockerEngine(url=url, client=client, process=process, log=log)
    finally:
        if client is not None:
            try:
                _clean_engine(client)
            finally:
                client.close()
        if process is not None:
            _stop_dockerd(process)
        problems = state.restore()
        shutil.rmtree(root, ignore_errors=True)
        lock.close()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
        assert not problems, "host clean-up after dockerd failed:\n" + "\n".join(problems)


@pytest.fixture
def clean_engine(docker_engine: DockerEngine) -> Iterator[DockerEngine]:
    """The engine, with the containers and networks a test made removed after it."""
    yield docker_engine
    _clean_engine(docker_engine.client)


def _base_tarball() -> Path:
    out = subprocess.run([str(ROOT / "tools" / "make_base_image.sh"), "--tarball-only"],
                         capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        pytest.fail(f"tools/make_base_image.sh failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def base_image(docker_engine: DockerEngine) -> str:
    """``procgraph/base:bookworm`` in the engine (from the cached debootstrap tarball)."""
    client = docker_engine.client
    try:
        client.images.get(BASE_TAG)
    except Exception:
        repository, tag = BASE_TAG.split(":")
        client.api.import_image(src=str(_base_tarball()), repository=repository, tag=tag,
                                changes=['CMD ["/bin/bash"]'])
    return BASE_TAG


@pytest.fixture(scope="session")
def docker_client(docker_engine: DockerEngine) -> Any:
    """The docker SDK client of :func:`docker_engine`."""
    return docker_engine.client


MY_AGENTS = '''\
"""A user's agent module beside the graph (not installed): it must be in the image."""

from pathlib import Path

from pydantic import ValidationInfo, field_validator

from procgraph import Agent, Input
from procgraph.examples import Reading


class Tally(Agent):
    """Counts readings; ``table`` is a file relative to the graph (a model, say)."""

    class Params(Agent.Params):
        table: str

        @field_validator("table")
        @classmethod
        def _exists(cls, value: str, info: ValidationInfo) -> str:
            folder = (info.context or {}).get("graph_dir")
            if folder is not None and not (Path(folder) / value).is_file():
                raise ValueError(f"no such file: {value}")
            return value

    readings = Input(Reading)

    def on_readings(self, msg: Reading) -> None:
        pass
'''

LINE_YAML = """\
name: imageline
brokers:
  main: {url: "${PROCGRAPH_REDIS:-embedded}"}
agents:
  counter: {class: "procgraph.examples:Counter", params: {rate_hz: 20}}
  tally: {class: "myagents:Tally", inputs: {readings: counter.out},
          params: {table: ../models/factors.json}}
"""


def write_line(root: Path) -> Path:
    """A graph folder as a user has it: graphs/line.yaml + graphs/myagents.py + models/."""
    (root / "graphs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "graphs" / "line.yaml").write_text(LINE_YAML)
    (root / "graphs" / "myagents.py").write_text(MY_AGENTS)
    (root / "models" / "factors.json").write_text('{"factor": 3}\n')
    (root / "models" / "unused.bin").write_bytes(b"\0" * 1024)  # not named: not in the image
    return root / "graphs" / "line.yaml"


@pytest.fixture(scope="session")
def line_folder() -> Callable[[Path], Path]:
    """:func:`write_line`: make a user's graph folder under a path, return its graph file."""
    return write_line


@dataclass
class AgentImage:
    """The agent image of :func:`write_line`'s graph, built once per session."""

    tag: str
    graph: Path
    result: Any  # procgraph.image.BuildResult
    progress: list[str]


@pytest.fixture(scope="session")
def agent_image(docker_engine: DockerEngine, base_image: str,
                tmp_path_factory: pytest.TempPathFactory) -> AgentImage:
    """deploy/Dockerfile built on ``base_image`` for a graph with its own module and model."""
    from procgraph.image import build_image

    graph = write_line(tmp_path_factory.mktemp("image-line"))
    progress: list[str] = []
    result = build_image(graph, "procgraph-test/line:1", base=base_image,
                         client=docker_engine.client, progress=progress.append)
    print(f"agent image: {result.size_bytes / 1e6:.0f} MB, built in {result.seconds:.1f} s")
    return AgentImage(tag=result.tag, graph=graph, result=result, progress=progress)


if __name__ == "__main__":  # by hand: python3 tests/containers/conftest.py  (start, stop)
    state = HostNetState.take()
    work = Path(tempfile.mkdtemp(prefix="pgdock-"))
    proc, dlog = _start_dockerd(work, "pgdock9999", "172.31.250.1/24")
    try:
        time.sleep(5)
        print(subprocess.run(["docker", "-H", f"unix://{work}/docker.sock", "info", "-f",
                              "{{.Driver}} {{.ServerVersion}}"], capture_output=True,
                             text=True).stdout)
    finally:
        _stop_dockerd(proc)
        print("problems:", state.restore())
        shutil.rmtree(work, ignore_errors=True)
