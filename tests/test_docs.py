"""The docs are tests: the tutorial is followed for real, the wire format page is checked
against procgraph.codec in both directions (the reader side without procgraph.codec)."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import pytest
import redis

from procgraph import Message, codec
from procgraph.brokers import free_port
from procgraph.errors import CodecError
from procgraph.message import Hop

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.S | re.M)
TITLE = re.compile(r'^(python|yaml) title="([^"]+)"$')
TUTORIAL_PORT = "6400"


# -- reading the markdown ------------------------------------------------------------------
def blocks(text: str) -> list[tuple[str, str]]:
    """Fenced blocks as (info string, body), in document order."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)]


def file_blocks(text: str) -> dict[str, str]:
    """The last version of every ``title="..."`` block."""
    out = {}
    for info, body in blocks(text):
        m = TITLE.match(info)
        if m:
            out[m.group(2)] = body
    return out


def console_steps(body: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines of a console block with the output lines shown under each."""
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def norm(line: str) -> str:
    """Timing-independent form of an output line: numbers become N, spaces collapse."""
    return " ".join(re.sub(r"\d+", "N", line).split())


def assert_lines_in(expected: list[str], actual: str, what: str) -> None:
    """Every shown line (except ``...``) appears in the real output, numbers aside."""
    got = {norm(line) for line in actual.splitlines()}
    missing = [line for line in expected if line.strip() != "..." and norm(line) not in got]
    assert not missing, f"{what}: lines shown in the docs but not printed:\n" + "\n".join(
        missing) + f"\n--- real output ---\n{actual}"


# -- running commands like a user ----------------------------------------------------------
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCGRAPH_")}
    env["COLUMNS"] = "80"
    env.pop("PYTEST_ADDOPTS", None)
    return env


def argv(command: str) -> list[str]:
    """The command as the docs show it, run with this interpreter."""
    args = shlex.split(command)
    if args[0] == "procgraph":
        return [sys.executable, "-m", "procgraph", *args[1:]]
    if args[0] == "pytest":
        return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args[1:]]
    raise AssertionError(f"the tutorial runs a command this test does not know: {command}")


def run(command: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv(command), cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


class Background:
    """A command running while others run (``procgraph run`` while we ``tap``)."""

    def __init__(self, command: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(argv(command), cwd=cwd, env=_env(), text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or time.monotonic() < deadline, "\n".join(self.lines)
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} in:\n" + "\n".join(self.lines))
            time.sleep(0.05)

    def finish(self, timeout_s: float = 40) -> str:
        try:
            self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        return "\n".join(self.lines)


def check_heartbeat(url: str) -> None:
    """A live heartbeat has the keys the example in wire-format.md shows."""
    shown = next(json.loads(body) for info, body in blocks((DOCS / "wire-format.md").read_text())
                 if info == "json" and '"agent"' in body)
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while (raw := client.get("pg:line:hb:alarm:0")) is None:
        assert time.monotonic() < deadline, "no heartbeat key"
        time.sleep(0.1)
    beat = json.loads(raw)
    client.close()
    assert list(beat) == list(shown)
    assert beat["inputs"]["readings"].keys() == shown["inputs"]["readings"].keys()
    assert beat["outputs"]["alerts"].keys() == shown["outputs"]["alerts"].keys()


# -- the tutorial --------------------------------------------------------------------------
def test_tutorial_runs_as_written(tmp_path: Path) -> None:
    port = str(free_port())
    # the shown port and state folder are the ones this run really uses
    state_root = os.environ["XDG_STATE_HOME"]  # each test's own (tests/conftest.py)
    text = ((DOCS / "tutorial.md").read_text().replace(TUTORIAL_PORT, port)
            .replace("~/.local/state", state_root))
    seen: list[str] = []
    items = blocks(text)
    i = 0
    while i < len(items):
        info, body = items[i]
        i += 1
        title = TITLE.match(info)
        if title:  # a file to create (a later block of the same name replaces it)
            (tmp_path / title.group(2)).write_text(body)
            continue
        if info != "console":
            continue
        steps = console_steps(body)
        for n, (command, expected) in enumerate(steps):
            seen.append(command.split()[0] + " " + command.split()[1])
            if command.startswith("procgraph run"):
                bg = Background(command, tmp_path)
                # the next console block may tap the running line
                nxt = console_steps(items[i][1]) if i < len(items) and \
                    items[i][0] == "console" and n == len(steps) - 1 else []
                if nxt and nxt[0][0].startswith("procgraph tap"):
                    bg.wait_for("replica(s) of")
                    tap_cmd, tap_expected = nxt[0]
                    tap = run(tap_cmd, tmp_path, timeout=30)
                    assert tap.returncode == 0, tap.stderr
                    assert_lines_in(tap_expected, tap.stdout, tap_cmd)
                    assert len(tap.stdout.splitlines()) == len(tap_expected)
                    seen.append("procgraph tap")
                    i += 1
                    check_heartbeat(f"redis://127.0.0.1:{port}")
                out = bg.finish()
                assert bg.proc.returncode == 0, out
                assert_lines_in(expected, out, command)
            elif command.startswith("pytest"):
                done = run(command, tmp_path, timeout=60)
                assert done.returncode == 0, done.stdout + done.stderr
                assert_lines_in(expected, done.stdout, command)
            else:  # validate / graph: deterministic, compared exactly
                done = run(command, tmp_path)
                shown = "\n".join(expected).strip()
                assert (done.stdout + done.stderr).strip() == shown, command
                assert done.returncode == (1 if shown.startswith("error:") else 0)
    # the tutorial still walks through every step this test knows how to check
    assert seen == [
        "procgraph validate", "procgraph graph", "procgraph run", "procgraph tap",
        "pytest -q", "procgraph validate", "procgraph run", "pytest -q",
        "procgraph validate", "procgraph validate",
    ], seen


def test_concepts_validation_error_is_real(tmp_path: Path) -> None:
    """The error shown in concepts.md is what validate prints for the tutorial's mistake."""
    files = file_blocks((DOCS / "tutorial.md").read_text())
    (tmp_path / "my_agents.py").write_text(files["my_agents.py"])
    (tmp_path / "line.yaml").write_text(files["fixed_params.yaml"])
    shown = [body for info, body in blocks((DOCS / "concepts.md").read_text())
             if info == "text" and body.startswith("error:")]
    assert len(shown) == 1
    done = run("procgraph validate line.yaml", tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == shown[0].strip()


def test_concepts_graph_example_validates(tmp_path: Path) -> None:
    files = file_blocks((DOCS / "tutorial.md").read_text())
    (tmp_path / "my_agents.py").write_text(files["my_agents.py"])
    graphs = [body for info, body in blocks((DOCS / "concepts.md").read_text())
              if info == "yaml" and body.startswith("name:")]
    assert graphs
    for n, body in enumerate(graphs):
        (tmp_path / f"g{n}.yaml").write_text(body)
        done = run(f"procgraph validate g{n}.yaml", tmp_path)
        assert done.returncode == 0, done.stderr


# -- the wire format -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def wire_client() -> ModuleType:
    """The reference client from docs/wire-format.md, which must not use procgraph."""
    source = file_blocks((DOCS / "wire-format.md").read_text())["wire_client.py"]
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert imported <= {"json", "math", "re", "time", "uuid", "numpy"}, imported
    module = ModuleType("wire_client")
    exec(compile(source, "docs/wire-format.md:wire_client.py", "exec"), module.__dict__)
    return module


class Scan(Message):
    """A message with every kind of array the wire format describes."""

    type_version: ClassVar[int] = 2
    station: str
    count: int
    ok: bool
    gains: list[float]
    image: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    big_endian: np.ndarray
    scalar: np.ndarray
    empty: np.ndarray
    missing: np.ndarray | None = None


def _scan() -> Scan:
    rng = np.random.default_rng(7)
    return Scan(
        key="part-7", station="S1", count=3, ok=True, gains=[1.5, 2.0],
        trace=[Hop(agent="cam", replica=1, in_ns=10, out_ns=20)],
        image=rng.integers(0, 255, (4, 5, 3), dtype=np.uint8),
        depth=rng.random((3, 4), dtype=np.float32).T,  # not C-contiguous
        mask=np.array([[True, False], [False, True]]),
        big_endian=np.arange(6, dtype=">u2").reshape(2, 3),
        scalar=np.array(-7, dtype=np.int64),
        empty=np.zeros((0, 3), dtype=np.float64),
    )


def test_wire_procgraph_to_plain_client(valkey: Any, wire_client: ModuleType) -> None:
    """procgraph writes an entry; redis-py + json + numpy read it as the page says."""
    from procgraph.transport import connect

    sent = _scan()
    client = connect(valkey.url)
    client.xadd("pg:docs:cam:scans", codec.encode(sent))
    ((_, fields),) = redis.Redis.from_url(valkey.url).xrange("pg:docs:cam:scans")

    assert next(iter(fields)) == b"h"  # the header first
    assert set(fields) == {b"h"} | {f"a:{n}".encode() for n in
                                    ("image", "depth", "mask", "big_endian", "scalar", "empty")}
    header, arrays = wire_client.read_entry(fields)
    assert list(header) == ["v", "type", "type_version", "id", "key", "ts_ns", "trace", "data",
                            "arrays"]
    assert header["v"] == 1 and header["type"] == "Scan" and header["type_version"] == 2
    assert header["id"] == sent.id and header["key"] == "part-7"
    assert header["ts_ns"] == sent.ts_ns
    assert header["trace"] == [{"agent": "cam", "replica": 1, "in_ns": 10, "out_ns": 20}]
    assert header["data"] == {"station": "S1", "count": 3, "ok": True, "gains": [1.5, 2.0]}
    descs = header["arrays"]
    assert "missing" not in descs  # None arrays are left out
    assert {n: d["dtype"] for n, d in descs.items()} == {
        "image": "|u1", "depth": "<f4", "mask": "|b1", "big_endian": ">u2",
        "scalar": "<i8", "empty": "<f8"}
    assert all(d["encoding"] == "raw" for d in descs.values())
    assert descs["scalar"]["shape"] == [] and fields[b"a:scalar"] == (-7).to_bytes(8, "little",
                                                                                 signed=True)
    assert fields[b"a:empty"] == b""
    assert fields[b"a:big_endian"] == b"\x00\x00\x00\x01\x00\x02\x00\x03\x00\x04\x00\x05"
    for name in descs:
        np.testing.assert_array_equal(arrays[name], getattr(sent, name))
        assert arrays[name].dtype == getattr(sent, name).dtype


def test_wire_plain_client_to_procgraph(valkey: Any, wire_client: ModuleType) -> None:
    """An entry written by hand per the page decodes with procgraph.codec.decode."""
    image = np.arange(24, dtype="<u2").reshape(2, 3, 4)
    trace = [{"agent": "other-lang", "replica": 0, "in_ns": 1, "out_ns": 2}]
    fields = wire_client.write_entry(
        "Scan",
        {"station": "S9", "count": 1, "ok": False, "gains": [], "ignored_by_reader": 1},
        {"image": image, "depth": np.ones((2, 2), dtype=">f8"),
         "mask": np.zeros(3, dtype=bool), "big_endian": np.arange(2, dtype=">i4"),
         "scalar": np.array(3.5, dtype="<f2"), "empty": np.zeros(0, dtype="|i1")},
        key="part-9", trace=trace,
    )
    r = redis.Redis.from_url(valkey.url)
    r.xadd("pg:docs:other:scans", fields, maxlen=1000, approximate=True)
    ((_, got),) = r.xrange("pg:docs:other:scans")
    msg = codec.decode(got, Scan)
    assert isinstance(msg, Scan)
    assert msg.key == "part-9" and msg.station == "S9" and msg.ok is False
    assert msg.trace[0].agent == "other-lang"
    np.testing.assert_array_equal(msg.image, image)
    assert msg.depth.dtype == np.dtype(">f8") and msg.scalar == np.float16(3.5)
    assert msg.missing is None


def test_wire_worked_example_is_exact(wire_client: ModuleType) -> None:
    """The entry printed in the page is what procgraph writes, and reads back."""
    text = (DOCS / "wire-format.md").read_text()
    namespace: dict[str, Any] = {}
    exec(file_blocks(text)["example_entry.py"], namespace)
    shown = namespace["FIELDS"]

    class Profile(Message):
        type_name: ClassVar[str] = "Profile"
        sensor: str
        exposure_us: int
        heights: np.ndarray

    msg = Profile(
        id="187afca767ca0000-4d2-1", key="part-0042", ts_ns=1764000000000000000,
        trace=[Hop(agent="laser", replica=0, in_ns=1764000000000000000,
                   out_ns=1764000000000150000)],
        sensor="L1", exposure_us=800,
        heights=np.array([[1, 2, 3], [256, 1000, 65535]], dtype=np.uint16),
    )
    assert {k: bytes(v) for k, v in codec.encode(msg).items()} == shown
    back = codec.decode(shown, Profile)
    assert back.model_dump(exclude={"heights"}) == msg.model_dump(exclude={"heights"})
    np.testing.assert_array_equal(back.heights, msg.heights)
    header, arrays = wire_client.read_entry(shown)
    assert header["data"] == {"sensor": "L1", "exposure_us": 800}
    assert arrays["heights"].tolist() == [[1, 2, 3], [256, 1000, 65535]]
    assert f"{1764000000000000000:x}" == "187afca767ca0000"  # the id format in the table


def _entry(header: dict[str, Any] | bytes | None, **arrays: bytes) -> dict[bytes, bytes]:
    base = {"v": 1, "type": "Scan", "id": "x", "key": "", "ts_ns": 1, "trace": [],
            "data": {}, "arrays": {}}
    fields: dict[bytes, bytes] = {}
    if isinstance(header, bytes):
        fields[b"h"] = header
    elif header is not None:
        fields[b"h"] = json.dumps({**base, **header}).encode()
    fields.update({f"a:{k}".encode(): v for k, v in arrays.items()})
    return fields


def _arr(dtype: Any = "<u2", shape: Any = (2,), **extra: Any) -> dict[str, Any]:
    desc: dict[str, Any] = {"dtype": dtype, "shape": shape, "encoding": "raw"}
    desc.update(extra)
    return {"arrays": {"image": desc}}


REJECTED = {
    "no h field": _entry(None),
    "not JSON": _entry(b"{not json"),
    "not UTF-8": _entry(b'{"v":1,"k":"\xff"}'),
    "not an object": _entry(b"[1]"),
    "no version": _entry({"v": None}),
    "version 2": _entry({"v": 2}),
    "version 1.0": _entry(b'{"v":1.0}'),
    "version as text": _entry({"v": "1"}),
    "version true": _entry({"v": True}),
    "descriptor not an object": _entry({"arrays": {"image": "<u2"}}),
    "no dtype": _entry({"arrays": {"image": {"shape": [1]}}}, image=b"\0"),
    "complex dtype": _entry(_arr("<c8", [1]), image=b"\0" * 8),
    "impossible dtype f1": _entry(_arr("|f1", [1]), image=b"\0"),
    "impossible dtype b2": _entry(_arr("<b2", [1]), image=b"\0" * 2),
    "long double": _entry(_arr("<f16", [1]), image=b"\0" * 16),
    "string dtype": _entry(_arr("<U1", [1]), image=b"\0" * 4),
    "object dtype": _entry(_arr("|O", [1]), image=b"\0" * 8),
    "date dtype": _entry(_arr("<M8[s]", [1]), image=b"\0" * 8),
    "shape not a list": _entry(_arr(shape=2), image=b"\0" * 4),
    "negative shape": _entry(_arr(shape=[-1]), image=b""),
    "float shape": _entry(_arr(shape=[2.0]), image=b"\0" * 4),
    "9 dimensions": _entry(_arr("|u1", [1] * 9), image=b"\0"),
    "too many elements": _entry(_arr("|u1", [2**21, 2**20]), image=b""),
    "unknown encoding": _entry(_arr(encoding="zstd"), image=b"\0" * 4),
    "missing array field": _entry(_arr()),
    "unknown ref scheme": _entry(_arr(ref="shm:abc")),
    "too short": _entry(_arr(), image=b"\0" * 3),
    "too long": _entry(_arr(), image=b"\0" * 5),
    "png that is not a png": _entry(_arr("|u1", [2, 2], encoding="png"), image=b"\0" * 4),
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_wire_rejections(name: str, wire_client: ModuleType) -> None:
    """What the page says a reader must reject, procgraph rejects, and so does the client."""

    class Image(Message):
        image: np.ndarray | None = None

    fields = REJECTED[name]
    with pytest.raises(CodecError):
        codec.decode(fields, Image)
    with pytest.raises(wire_client.WireError):
        wire_client.read_entry(fields)


def test_wire_reader_ignores_what_the_page_says() -> None:
    """Unknown header keys, data keys, arrays and extra fields are ignored."""

    class Small(Message):
        n: int

    fields = _entry({"future_key": {"x": 1}, "data": {"n": 3, "later_field": "y"},
                     **_arr("|u1", [1])}, image=b"\7")
    fields[b"dead:reason"] = b"whatever"
    msg = codec.decode(fields, Small)
    assert msg.n == 3 and msg.id == "x"


def test_stream_and_key_names_match_the_page() -> None:
    from procgraph.constants import dead_letter_key, heartbeat_key, stream_key

    assert stream_key("line", "thermometer", "readings") == "pg:line:thermometer:readings"
    assert dead_letter_key("pg:line:thermometer:readings") == "pg:line:thermometer:readings:dead"
    assert heartbeat_key("line", "alarm", 0) == "pg:line:hb:alarm:0"
