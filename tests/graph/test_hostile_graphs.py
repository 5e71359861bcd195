"""Hostile graph files (issue 9 items 7, 8 and 18), through the real ``procgraph validate``.

Each case runs the command in a child process under an address-space limit and a wall-clock
limit, and checks that it ends with one ``error:`` line and one ``fix:`` line, no traceback.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pgtest_procs import env

TESTS = Path(__file__).resolve().parents[1]
#: the address space a ``validate`` child may use: a few times what a normal graph needs
MEMORY_LIMIT = 1024 * 2**20
#: how long a ``validate`` child may take, hostile file or not
TIME_LIMIT_S = 20.0
#: the import timeout the child gets, so a hanging import is reported quickly
IMPORT_TIMEOUT_S = 2.0
# `procgraph validate`, with the import timeout shortened (procgraph.graph.imports's constant)
CLI = ("import sys; import procgraph.graph.imports as i; "
       f"i.IMPORT_TIMEOUT_S = {IMPORT_TIMEOUT_S}; "
       "from procgraph.cli.main import main; sys.argv[0] = 'procgraph'; main()")
AGENT = 'agents:\n  n: {class: "pgtest_agents:Numbers"}\n'


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@dataclass
class Validated:
    """What one ``procgraph validate`` child did."""

    code: int
    stdout: str
    stderr: str
    seconds: float
    lines: list[str] = field(default_factory=list)


def validate(graph: Path) -> Validated:
    """Run ``procgraph validate GRAPH`` in a child bounded in memory and time."""
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CLI, "validate", str(graph)], capture_output=True,
            env=env(), preexec_fn=_limit_memory, timeout=TIME_LIMIT_S, cwd=graph.parent.parent,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"procgraph validate ran over {TIME_LIMIT_S} s: {exc.stderr!r}")
    seconds = time.monotonic() - start
    stderr = proc.stderr.decode("utf-8", "replace")
    return Validated(proc.returncode, proc.stdout.decode("utf-8", "replace"), stderr, seconds,
                     stderr.strip().splitlines())


def assert_one_error(result: Validated, *needles: str) -> str:
    """The child exited 1 with exactly an ``error:`` line and a ``fix:`` line."""
    assert result.code == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.lines) == 2, result.stderr
    error, fix = result.lines
    assert error.startswith("error: "), result.stderr
    assert fix.strip().startswith("fix: "), result.stderr
    for needle in needles:
        assert needle in error, f"{needle!r} not in {error!r}"
    return error


@pytest.fixture
def gdir(tmp_path: Path) -> Path:
    """A graph folder holding the test agents (the child runs in the folder above it)."""
    folder = tmp_path / "graph"
    folder.mkdir()
    shutil.copy(TESTS / "pgtest_agents.py", folder / "pgtest_agents.py")
    return folder


# the "billion laughs" document: 10 levels of 9 aliases in 457 bytes, 3.9 billion nodes expanded
ALIAS_BOMB = "a: &a [" + ", ".join(['"lol"'] * 9) + "]\n" + "".join(
    f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefghi", "bcdefghij",
                                                                     strict=True))


def _alias_bomb(gdir: Path) -> Path:
    file = gdir / "bomb.yaml"
    file.write_text("name: t\n" + AGENT + ALIAS_BOMB)
    return file


def _fifty_mb_of_keys(gdir: Path) -> Path:
    file = gdir / "keys.yaml"
    with file.open("w") as out:
        out.write("name: t\n" + AGENT + "params:\n")
        line = 0
        while out.tell() < 50 * 2**20:
            out.write("".join(f"  key{line + i:09d}: {line + i}\n" for i in range(10_000)))
            line += 10_000
    return file


@pytest.mark.parametrize(("make", "needles"), [
    (_alias_bomb, ("bomb.yaml:", "aliases expand to over", "limit")),
    (_fifty_mb_of_keys, ("keys.yaml:", "over 1 MiB", "limit")),
], ids=["alias-bomb", "50-MB-of-keys"])
def test_item07_alias_bomb_and_huge_file_are_refused(
        gdir: Path, make: Callable[[Path], Path], needles: tuple[str, ...]) -> None:
    """Issue 9 item 7: a 498-byte alias bomb and 50 MB of keys end in one error, quickly."""
    graph = make(gdir)
    result = validate(graph)
    error = assert_one_error(result, str(graph), *needles)
    if graph.name == "bomb.yaml":  # the line of the alias that crossed the limit
        assert len(ALIAS_BOMB) < 500
        line = int(error.split(":")[2])
        assert graph.read_text().splitlines()[line - 1][:1] in "bcdefghij", error
    assert result.seconds < 10, result


def test_item07_graph_just_under_the_size_limit_loads_in_bounded_time(gdir: Path) -> None:
    """Issue 9 item 7: a value of 200,000 unclosed ``${A:-`` (1 MB) is read in linear time."""
    graph = gdir / "vars.yaml"
    graph.write_text("name: t\n" + AGENT + "description: '" + "${A:-" * 200_000 + "'\n")
    assert graph.stat().st_size < 2**20
    result = validate(graph)
    assert result.code == 0, result
    assert result.seconds < 10, result


LATIN1 = ("name: t\ndescription: Gr\u00fc\u00dfe\n" + AGENT).encode("latin-1")


def _non_utf8(gdir: Path) -> Path:
    file = gdir / "latin1.yaml"
    file.write_bytes(LATIN1)
    return file


def _utf16(gdir: Path) -> Path:
    file = gdir / "utf16.yaml"
    file.write_bytes(("name: t\n" + AGENT).encode("utf-16"))  # with a byte-order mark
    return file


def _utf16_without_bom(gdir: Path) -> Path:
    file = gdir / "utf16le.yaml"
    file.write_bytes(("name: t\n" + AGENT).encode("utf-16-le"))
    return file


def _nested(gdir: Path) -> Path:
    file = gdir / "nested.yaml"
    file.write_text("name: t\n" + AGENT + "params: " + "[" * 10**5 + "]" * 10**5 + "\n")
    return file


def _fifo(gdir: Path) -> Path:
    file = gdir / "fifo.yaml"
    os.mkfifo(file)  # opening it for reading would wait for a writer forever
    return file


def _module_graph(gdir: Path, source: str) -> Path:
    (gdir / "pgt_hostile_mod.py").write_text(source)
    file = gdir / "graph.yaml"
    file.write_text('name: t\nagents:\n  n: {class: "pgt_hostile_mod:X"}\n')
    return file


def _exits_at_import(gdir: Path) -> Path:
    return _module_graph(gdir, "import sys\nsys.exit(3)\n")


def _hangs_at_import(gdir: Path) -> Path:
    return _module_graph(gdir, "import time\nwhile True:\n    time.sleep(0.05)\n")


@pytest.mark.parametrize(("make", "needles"), [
    (_non_utf8, ("latin1.yaml:2:", f"not UTF-8 text (byte {LATIN1.index(0xFC)})")),
    (_utf16, ("utf16.yaml:1:", "not UTF-8 text (byte 0)", "UTF-16")),
    (_utf16_without_bom, ("utf16le.yaml:1:", "not UTF-8 text (byte 1)", "UTF-16")),
    (_nested, ("nested.yaml:4:", "nested too deep (limit")),
    (_fifo, ("fifo.yaml", "not a regular file")),
    (_exits_at_import, ("graph.yaml:3:", "'pgt_hostile_mod'", "sys.exit(3)")),
    (_hangs_at_import, ("graph.yaml:3:", "'pgt_hostile_mod'", f"{IMPORT_TIMEOUT_S:g} s",
                        "pgt_hostile_mod.py:")),
], ids=["latin-1", "utf-16", "utf-16-no-bom", "nested-10^5", "fifo", "sys.exit(3)", "hangs"])
def test_item08_unreadable_files_and_bad_imports_say_what_to_fix(
        gdir: Path, make: Callable[[Path], Path], needles: tuple[str, ...]) -> None:
    """Issue 9 item 8: bad encodings, deep nesting, sys.exit(3) and a hang at import."""
    result = validate(make(gdir))
    assert_one_error(result, *needles)
    assert result.seconds < 5 + IMPORT_TIMEOUT_S, result


def test_item18_module_beside_the_graph_does_not_shadow_an_installed_one(gdir: Path) -> None:
    """Issue 9 item 18: a cv2.py beside a graph does not run; validate warns in one line."""
    pytest.importorskip("cv2")
    marker = gdir / "cv2-ran"
    (gdir / "cv2.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (gdir / "pgt_uses_cv2.py").write_text(
        "import cv2\n\nfrom pgtest_agents import Numbers as Uses\n\n__all__ = ['Uses', 'cv2']\n")
    graph = gdir / "graph.yaml"
    graph.write_text('name: t\nagents:\n  n: {class: "pgt_uses_cv2:Uses"}\n')
    result = validate(graph)
    assert result.code == 0, result
    assert not marker.exists(), "the cv2.py beside the graph ran"
    warnings = [ln for ln in result.lines if "cv2" in ln]
    assert len(result.lines) == 1 and len(warnings) == 1, result.stderr
    assert warnings[0].startswith("warning: "), warnings
    assert str(gdir / "cv2.py") in warnings[0], warnings
    assert "installed" in warnings[0] and "rename" in warnings[0], warnings
