"""deploy/Dockerfile and ``procgraph image build``, built and run in a private Docker engine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from procgraph import __version__
from procgraph.image import run_in_image

ROOT = Path(__file__).resolve().parents[2]
DockerEngine = AgentImage = Any  # tests/containers/conftest.py's fixtures

# the docker SDK leaves a unix socket of the engine unclosed somewhere (a ResourceWarning
# raised as an unraisable exception at teardown; not found yet): not a failure of the image
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


def _in_image(engine: DockerEngine, tag: str, *command: str, entrypoint: str | None = None
              ) -> str:
    """Run a throw-away container of ``tag`` (no network); its output (it must exit 0)."""
    status, out = run_in_image(engine.client, tag, list(command),
                               entrypoint=[entrypoint] if entrypoint else None)
    assert status == 0, out
    return out


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "procgraph", *args], capture_output=True,
                          text=True, env=env, timeout=540, check=False)


def test_image_runs_the_graph_folder_as_non_root(docker_engine: DockerEngine,
                                                 agent_image: AgentImage) -> None:
    """The user's module and the model the graph names are in; `validate` imports them."""
    assert any(line.startswith("Step ") for line in agent_image.progress)
    assert _in_image(docker_engine, agent_image.tag, "--version").strip().endswith(__version__)
    out = _in_image(docker_engine, agent_image.tag, "validate", "/app/graphs/line.yaml")
    assert "/app/graphs/line.yaml: ok: graph 'imageline', 2 agents" in out
    assert _in_image(docker_engine, agent_image.tag, "-u", entrypoint="id").strip() == "10001"
    listing = _in_image(docker_engine, agent_image.tag, "-c",
                        "find /app -type f | sort", entrypoint="sh").split()
    assert listing == ["/app/graphs/line.yaml", "/app/graphs/myagents.py",
                       "/app/models/factors.json"]  # not models/unused.bin: nothing names it
    image = docker_engine.client.images.get(agent_image.tag)
    assert image.attrs["Config"]["User"] == "10001:10001"
    assert image.attrs["Config"]["Entrypoint"] == ["procgraph"]


def test_cli_builds_the_inspection_line_warm(docker_engine: DockerEngine,
                                             agent_image: AgentImage) -> None:
    """`procgraph image build` of the repo's inspection graph reuses the dependency layer."""
    started = time.monotonic()
    run = _cli("image", "build", str(ROOT / "graphs" / "inspection.yaml"), "--tag",
               "procgraph-test/inspection:1", "--base", "procgraph/base:bookworm",
               env=docker_engine.env())
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stderr + run.stdout
    print(f"warm build (CLI, inspection graph): {seconds:.1f} s")
    assert "wheelhouse: dependencies from the cache" in run.stdout
    assert "built procgraph-test/inspection:1 (" in run.stdout
    out = _in_image(docker_engine, "procgraph-test/inspection:1", "validate",
                    "/app/graphs/inspection.yaml")
    assert "ok: graph 'inspection'" in out  # the ../models/*.onnx the classifiers load
    listing = _in_image(docker_engine, "procgraph-test/inspection:1", "-c",
                        "ls /app/models", entrypoint="sh").split()
    assert {"parts-front.onnx", "parts-back.onnx"} <= set(listing)


def test_missing_base_says_how_to_make_one(docker_engine: DockerEngine, tmp_path: Path,
                                           line_folder: Callable[[Path], Path]) -> None:
    run = _cli("image", "build", str(line_folder(tmp_path)), "--base", "nothere/base:1",
               env=docker_engine.env())
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.count("error:") == 1
    assert "base image nothere/base:1 is not in the Docker engine" in run.stderr
    assert "tools/make_base_image.sh" in run.stderr


def test_no_engine_is_one_error_line(tmp_path: Path,
                                    line_folder: Callable[[Path], Path]) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    run = _cli("image", "build", str(line_folder(tmp_path / "line")), env=env)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no Docker engine answers at unix://")
    assert "DOCKER_HOST" in lines[0]
