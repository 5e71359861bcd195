"""Checks that keep the layering as issue 7 left it (part of the normal test command).

- import contracts (``[tool.importlinter]`` in pyproject): the built-in agents import only
  procgraph's public API, the framework imports no agent, the CLI sits above the library;
- mypy: strict on procgraph, basic (``check_untyped_defs``) on the built-in agents
  (``[tool.mypy]`` and its overrides in pyproject);
- every package folder is listed in pyproject, environment variables are read in
  procgraph.settings only, heartbeat keys are built in procgraph.health only.

Why a temporary tree: the editable install maps ``procgraph.agents`` to the top-level
``agents/`` folder with an import hook, which grimp (import-linter) and mypy do not run; for
them ``agents/`` is not inside ``procgraph``. So the checks run on a tree laid out like the
installed package, ``procgraph/`` mirroring ``src/procgraph/`` and ``procgraph/agents/``
mirroring ``agents/``, each file a symlink to the real one, with that tree first on the path.
It lives in build/ (git-ignored) at a fixed place, so mypy's cache there stays warm between
runs; a file lock keeps two test runs from rebuilding it at once.
"""

from __future__ import annotations

import ast
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "procgraph"
AGENTS = ROOT / "agents"
BUILD = ROOT / "build" / "contracts"


def _mirror(src: Path, dst: Path) -> None:
    """Real folders, symlinked files: grimp and mypy walk it like the real package."""
    for folder, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = Path(folder).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.endswith((".py", ".pyi")) or name == "py.typed":
                (dst / rel / name).symlink_to(Path(folder) / name)


@pytest.fixture(scope="module")
def tree() -> Iterator[Path]:
    """``build/contracts/tree``: the installed layout of procgraph, rebuilt for this run."""
    BUILD.mkdir(parents=True, exist_ok=True)
    with (BUILD / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        top = BUILD / "tree"
        shutil.rmtree(top, ignore_errors=True)
        _mirror(SRC, top / "procgraph")
        shutil.rmtree(top / "procgraph" / "agents", ignore_errors=True)  # agents/ goes here
        _mirror(AGENTS, top / "procgraph" / "agents")
        yield top
        fcntl.flock(lock, fcntl.LOCK_UN)


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _readable(text: str, top: Path) -> str:
    """Tree paths back to the real files, so a failure names what to edit."""
    text = text.replace(f"{top}/procgraph/agents/", "agents/")
    text = re.sub(r"(?m)^procgraph/agents/", "agents/", text)
    text = text.replace(f"{top}/procgraph/", "src/procgraph/")
    return re.sub(r"(?m)^procgraph/", "src/procgraph/", text)


def test_import_contracts(tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run([_tool("lint-imports"), str(ROOT / "pyproject.toml")],
                            cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, _readable(result.stdout[-6000:] + result.stderr[-2000:],
                                             tree)


def test_mypy(tree: Path) -> None:
    """Strict on procgraph, basic on procgraph.agents (the override in pyproject)."""
    result = subprocess.run(
        [_tool("mypy"), "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(BUILD / "mypy-cache"), "-p", "procgraph"],
        cwd=tree, capture_output=True, text=True, timeout=600)
    out = _readable(result.stdout, tree)
    by_file: dict[str, int] = {}
    for line in out.splitlines():
        if ": error:" in line:
            name = line.split(":", 1)[0]
            by_file[name] = by_file.get(name, 0) + 1
    summary = "\n".join(f"  {n:4d}  {f}" for f, n in sorted(by_file.items()))
    assert result.returncode == 0, f"mypy errors per file:\n{summary}\n\n{out[-8000:]}"


# -- package list, settings, heartbeats ---------------------------------------------------
def _packages_on_disk() -> set[str]:
    found = set()
    for base, prefix in ((SRC, "procgraph"), (AGENTS, "procgraph.agents")):
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((prefix, *rel)))
    return found


def test_every_package_is_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    missing = sorted(_packages_on_disk() - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def _python_files() -> Iterator[Path]:
    for base in (SRC, AGENTS):
        yield from (p for p in base.rglob("*.py") if "__pycache__" not in p.parts)


def _calls(tree: ast.AST, names: set[str]) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in names:
                yield node


def test_environment_is_read_in_settings_only() -> None:
    """No os.environ / getenv of PROCGRAPH_* and no typer envvar= outside procgraph.settings."""
    offenders = []
    for path in _python_files():
        if path == SRC / "settings.py":
            continue
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        if re.search(r"environ(\.get)?\s*[\[(]\s*[\"']PROCGRAPH_|getenv\(\s*[\"']PROCGRAPH_",
                     text):
            offenders.append(f"{rel}: reads a PROCGRAPH_* variable")
        for call in _calls(ast.parse(text), {"Option", "Argument"}):
            if any(k.arg == "envvar" for k in call.keywords):
                offenders.append(f"{rel}:{call.lineno}: typer envvar= (use procgraph.settings)")
        for line_no, line in enumerate(text.splitlines(), 1):
            if re.search(r"[\"']PROCGRAPH_[A-Z_]+[\"']", line) and path != SRC / "constants.py":
                offenders.append(f"{rel}:{line_no}: names a variable by hand (constants.py)")
    assert not offenders, "\n".join(offenders)


def test_heartbeat_keys_are_built_in_health_only() -> None:
    """Heartbeats are written and read through procgraph.health, nowhere else."""
    allowed = {SRC / "health.py", SRC / "constants.py"}
    offenders = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for path in _python_files() if path not in allowed
        for call in _calls(ast.parse(path.read_text(encoding="utf-8")),
                           {"heartbeat_key", "heartbeat_pattern"})
    ]
    assert not offenders, f"use procgraph.health (read_heartbeats/write_heartbeat): {offenders}"
