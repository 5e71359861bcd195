"""Agents as containers under the supervisor (``procgraph run --runtime docker``), for real.

A private dockerd (tests/containers/conftest.py), an image built from deploy/Dockerfile for a
graph folder with the test agents (tests/pgtest_agents.py) beside the graph, a real broker on
loopback (the containers use host networking) and the real ``procgraph run``. Counted at the
sink (``Recorder``: a set of the keys it handled, and how many handler calls): lost,
duplicated, incomplete.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import redis

from pgtest_agents import keys, seen
from pgtest_procs import Collected
from procgraph.brokers import EmbeddedBroker
from procgraph.graph import load_graph
from procgraph.graph.spec import ResourcesSpec
from procgraph.replicas import DockerLauncher, LaunchError

TESTS = Path(__file__).resolve().parents[1]
DockerEngine = Any  # tests/containers/conftest.py's fixture
COUNT = 300
GRAPH = f"""\
name: rtline
agents:
  numbers: {{class: pgtest_agents:Numbers, params: {{count: {COUNT}, rate_hz: 60}}}}
  sink:
    class: pgtest_agents:Recorder
    inputs: {{items: {{from: numbers.out, policy: lossless}}}}
"""
TAG = "procgraph-test/runtime:1"

pytestmark = [
    pytest.mark.slow,  # a private dockerd and an image build (run in CI)
    pytest.mark.timeout(400),
    # the docker SDK's build and import streams leave unix sockets to the GC, which closes
    # them wherever it runs next (procgraph.image); not a leak of the line under test
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def _graph_folder(root: Path) -> Path:
    (root / "graphs").mkdir(parents=True)
    shutil.copy(TESTS / "pgtest_agents.py", root / "graphs" / "pgtest_agents.py")
    graph = root / "graphs" / "rt.yaml"
    graph.write_text(GRAPH)
    return graph


@pytest.fixture(scope="module")
def runtime_image(docker_engine: DockerEngine, base_image: str,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The image of the test line (its agents' module in /app/graphs), and its graph file."""
    from procgraph.image import build_image

    graph = _graph_folder(tmp_path_factory.mktemp("rtline"))
    result = build_image(graph, TAG, base=base_image, client=docker_engine.client)
    with warnings.catch_warnings():  # the SDK's build/import streams leave unix sockets to
        warnings.simplefilter("ignore", ResourceWarning)  # the GC: collect them here, not
        gc.collect()  # in the middle of a later test
    print(f"runtime image: {result.size_bytes / 1e6:.0f} MB, built in {result.seconds:.1f} s")
    return TAG, graph


def _containers(engine: DockerEngine, agent: str | None = None) -> list[Any]:
    labels = ["procgraph.graph=rtline"] + ([f"procgraph.agent={agent}"] if agent else [])
    return list(engine.client.containers.list(all=True, filters={"label": labels}))


class _Run(Collected):
    """``procgraph run`` in the background, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        super().__init__(["run", *args], env)

    def wait_for(self, pattern: str, timeout_s: float, start: int = 0) -> re.Match[str]:
        """The first line from line ``start`` on that matches ``pattern``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines)[start:]:
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the output:\n{self.output}")

    def stop(self, timeout_s: float = 40) -> int:
        """Ctrl-C, then kill after ``timeout_s``."""
        return super().stop(timeout_s)


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_line_of_containers_survives_docker_kill(
        clean_engine: DockerEngine, runtime_image: tuple[str, Path], valkey: EmbeddedBroker,
        tmp_path: Path) -> None:
    """Every item at the sink exactly once, across a docker kill of the source's container;
    the containers are restarted, their records filed, and removed after the stop."""
    tag, graph = runtime_image
    client = redis.Redis.from_url(valkey.url)
    env = {**clean_engine.env(), "PROCGRAPH_REDIS": valkey.url, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    run = _Run([str(graph), "--runtime", "docker", "--image", tag,
                "--state-dir", str(tmp_path / "state")], env)
    try:
        run.wait_for(r"ready in [\d.]+s: line 'rtline', 2 replica\(s\) up", 90)
        ready_s = time.monotonic() - started
        beats = {m.group(1): float(m.group(2)) for m in (
            re.search(r"(\w+)\[0\]: container \S+: first heartbeat ([\d.]+)s after", line)
            for line in run.lines) if m}
        assert set(beats) == {"numbers", "sink"}, run.output
        assert {c.name.split("-")[2] for c in _containers(clean_engine)} == {"numbers", "sink"}
        first = _containers(clean_engine, "numbers")
        assert len(first) == 1 and first[0].attrs["HostConfig"]["NetworkMode"] == "host"
        _wait(lambda: len(seen(client, "sink")) >= COUNT // 3, 60, "a third at the sink")
        at_kill, mark = len(seen(client, "sink")), len(run.lines)
        first[0].kill()  # docker kill: SIGKILL to the container
        run.wait_for(r"numbers\[0\] exited with code 137 after [\d.]+s; restarting", 20, mark)
        restart = run.wait_for(r"numbers\[0\]: container (\S+): first heartbeat ([\d.]+)s",
                               60, mark)
        assert restart.group(1) != first[0].name
        _wait(lambda: seen(client, "sink") >= keys(COUNT), 90, "every item at the sink")
        time.sleep(1.5)  # a duplicate, if any, arrives now
        got = seen(client, "sink")
        handled = int(client.get("pgtest:sink:handled") or 0)
        names_before = {c.name for c in _containers(clean_engine)}
    finally:
        code = run.stop()
    print("\n".join(run.lines[:40]))
    lost, dup = len(keys(COUNT) - got), handled - len(got)
    print(f"RUNTIME docker: items={COUNT} at the sink={len(got)} lost={lost} duplicated={dup} "
          f"(docker kill of numbers at {at_kill} items); ready in {ready_s:.1f}s; container "
          f"start -> first heartbeat: {beats} s, after the restart "
          f"{float(restart.group(2)):.1f} s")
    assert code == 0, run.output
    assert lost == 0 and got == keys(COUNT) and dup == 0, run.output
    assert "stopping 2 replica(s)" in run.output and "Traceback" not in run.output
    assert len(names_before) == 2 and first[0].name not in names_before
    assert _containers(clean_engine) == [], "containers left after the stop"
    logs = tmp_path / "state" / "logs"
    filed = "\n".join(p.read_text(errors="replace") for p in logs.rglob("*sink*"))
    assert "INFO" in filed, sorted(p.name for p in logs.rglob("*"))  # the container's records


def test_kill_9_of_the_supervisor_ends_its_containers(
        clean_engine: DockerEngine, runtime_image: tuple[str, Path], valkey: EmbeddedBroker,
        tmp_path: Path) -> None:
    """``kill -9`` of ``procgraph run --runtime docker``: its guard ends the containers (none
    keeps running), and the next run of the line removes the exited ones and runs again."""
    tag, graph = runtime_image
    env = {**clean_engine.env(), "PROCGRAPH_REDIS": valkey.url, "PYTHONUNBUFFERED": "1"}
    args = [str(graph), "--runtime", "docker", "--image", tag,
            "--state-dir", str(tmp_path / "state")]
    run = _Run(args, env)
    try:
        run.wait_for(r"ready in [\d.]+s: line 'rtline'", 90)
        assert len([c for c in _containers(clean_engine) if c.status == "running"]) == 2
        run.proc.kill()  # kill -9: no clean stop, no finally in the supervisor
        run.proc.wait(10)

        def none_running() -> bool:
            return not [c for c in _containers(clean_engine) if c.status == "running"]

        _wait(none_running, 15, "the guard to end every container of the killed supervisor")
    finally:
        run.stop()
    again = _Run(args, env)
    try:
        again.wait_for(r"ready in [\d.]+s: line 'rtline'", 90)
        names = {c.name for c in _containers(clean_engine)}
        assert len(names) == 2, names  # the exited ones are gone, two new ones run
    finally:
        code = again.stop()
    assert code == 0, again.output
    assert _containers(clean_engine) == []


def test_container_limits_devices_and_clean_stop(
        clean_engine: DockerEngine, runtime_image: tuple[str, Path], valkey: EmbeddedBroker,
        tmp_path: Path) -> None:
    """``resources`` and ``devices`` reach the engine; SIGTERM stops the agent cleanly (exit
    0 within the grace) and the container is removed."""
    tag, graph = runtime_image
    plan = load_graph(graph)
    sink = plan.agents["sink"]
    sink.runtime, sink.image = "docker", tag
    sink.resources = ResourcesSpec(cpus=0.5, memory_mb=256)
    sink.devices = ["/dev/null:/dev/pgnull"]
    launcher = DockerLauncher(plan, None, client=clean_engine.client)
    env = {"PROCGRAPH_BROKERS": f'{{"main": "{valkey.url}"}}', "PROCGRAPH_SUPERVISED": "1",
           "PYTHONUNBUFFERED": "1", "HOME": "/root", "PATH": os.environ.get("PATH", "")}
    handle = launcher.launch(sink, 0, 0, env, {"main": valkey.url})
    try:
        attrs = clean_engine.client.api.inspect_container(handle.name)
        host = attrs["HostConfig"]
        assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 256 * 2**20
        assert host["Devices"] == [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/pgnull",
                                    "CgroupPermissions": "rwm"}]
        assert host["Init"] is True and host["NetworkMode"] == "host"
        assert not [e for e in attrs["Config"]["Env"] if e.startswith("HOME=")]
        assert handle.pid > 0 and handle.poll() is None
        client = redis.Redis.from_url(valkey.url)
        _wait(lambda: client.exists("pg:rtline:hb:sink:0"), 30, "the sink's heartbeat")
        handle.terminate()
        assert handle.wait(10) == 0
        assert handle.stdout is not None
        out = handle.stdout.read().decode()
        assert "@pg" in out and "signal 15: stopping" in out, out
    finally:
        handle.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            handle.wait(10)
        handle.release()
    assert clean_engine.client.containers.list(all=True, filters={"name": handle.name}) == []


def test_bridge_cannot_reach_a_loopback_broker(tmp_path: Path) -> None:
    graph = _graph_folder(tmp_path)
    plan = load_graph(graph)
    agent = plan.agents["sink"]
    agent.runtime, agent.image, agent.network = "docker", TAG, "bridge"
    with pytest.raises(LaunchError, match="network: bridge, but broker 'main' is on loopback"):
        DockerLauncher(plan, None, client=object()).check(agent, {"main": "redis://127.0.0.1:1"})


def test_docker_without_image_is_one_error_line(tmp_path: Path) -> None:
    graph = _graph_folder(tmp_path)
    run = subprocess.run([sys.executable, "-m", "procgraph", "run", str(graph), "--runtime",
                          "docker", "--duration", "1"], capture_output=True, text=True,
                         timeout=60, check=False)
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert run.returncode == 1 and len(lines) == 1, run.stderr
    assert lines[0].startswith("error: agents numbers, sink run as containers but have no "
                               "image: give --image IMAGE"), lines


def test_a_missing_image_says_how_to_make_one(clean_engine: DockerEngine,
                                              tmp_path: Path) -> None:
    plan = load_graph(_graph_folder(tmp_path))
    agent = plan.agents["sink"]
    agent.runtime, agent.image = "docker", "nothere/line:1"
    launcher = DockerLauncher(plan, None, client=clean_engine.client)
    with pytest.raises(LaunchError, match=r"from image 'nothere/line:1': .*build it with "
                                          r"procgraph image build"):
        launcher.launch(agent, 0, 0, {}, {"main": "redis://127.0.0.1:1"})
    assert _containers(clean_engine) == []
