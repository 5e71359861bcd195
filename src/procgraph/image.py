"""Build the agent image (deploy/Dockerfile) for a graph, with no network inside the build.

The host makes a wheelhouse (``pip wheel``: procgraph and every dependency; the dependencies
are cached by procgraph version and Python in ``$PROCGRAPH_IMAGE_CACHE``, default
``~/.cache/procgraph``), then a build context in a temporary folder::

    Dockerfile        deploy/Dockerfile of the procgraph source
    wheels/           the wheelhouse (installed with pip --no-index inside the build)
    app/graphs/       the graph's folder: graph files, agent modules and packages, models
    app/<other>/      files the graph names outside its folder (``../models/x.onnx``)

and the Docker engine (docker SDK for Python, ``$DOCKER_HOST``) builds it with the legacy
builder on the base image ``PYTHON_IMAGE``, which must already be in the engine (nothing is
pulled): ``python:3.11-slim``, or ``procgraph/base:bookworm`` from tools/make_base_image.sh
where there is no registry.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import procgraph
from procgraph.errors import ProcgraphError, require
from procgraph.safetext import printable

__all__ = ["DEFAULT_BASES", "BuildResult", "ImageError", "app_files", "build_image",
           "run_in_image"]

DEFAULT_BASES = ("python:3.11-slim", "procgraph/base:bookworm")
"""Base images tried in this order when none is given."""
APP_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".onnx", ".txt", ".cti"}
"""Files of the graph's folder (top level) that go into the image; packages go whole."""
MAX_APP_BYTES = 1 << 30
MAKE_BASE_HINT = ("make one without a registry: tools/make_base_image.sh (debootstrap; in the "
                  "procgraph source), or `docker pull python:3.11-slim` where a registry is "
                  "reachable; then pass --base IMAGE")


class ImageError(ProcgraphError):
    """The image cannot be built: the message says what is missing and how to get it."""


@dataclass(frozen=True)
class BuildResult:
    """A built image: its tag, id, size and how long the build took."""

    tag: str
    image_id: str
    size_bytes: int
    seconds: float


def cache_dir() -> Path:
    """``$PROCGRAPH_IMAGE_CACHE``, else ``~/.cache/procgraph`` (base tarball, wheelhouses)."""
    from procgraph.settings import load_settings

    given = load_settings().image_cache
    return Path(given).expanduser() if given else Path.home() / ".cache" / "procgraph"


def source_root() -> Path | None:
    """The procgraph source tree this procgraph runs from (editable install), if any."""
    here = Path(procgraph.__file__).resolve().parent  # .../src/procgraph
    root = here.parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "procgraph"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def _pip_wheel(args: list[str], progress: Callable[[str], None]) -> None:
    cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", *args]
    # the same source gives the same wheel bytes, so the image's install layer stays cached
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "315532800")}
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-8:])
        msg = f"pip wheel failed on the host ({' '.join(args[-1:])}):\n{tail}"
        raise ImageError(msg)


def _missing_requirements(wheels: Path, python: str) -> list[str]:
    """Requirements of the wheels in ``wheels`` that hold for Python ``python`` (the image's)
    but have no wheel there: those whose markers differ from the host's (async-timeout for
    Python < 3.11.3, say)."""
    markers = require("packaging.markers", "containers")
    requirements = require("packaging.requirements", "containers")
    utils = require("packaging.utils", "containers")
    env = dict(markers.default_environment())  # type: ignore[attr-defined]
    env.update(python_full_version=python, python_version=".".join(python.split(".")[:2]),
               extra="")
    have = {utils.canonicalize_name(w.name.split("-")[0])  # type: ignore[attr-defined]
            for w in wheels.glob("*.whl")}
    missing: list[str] = []
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            meta = next((n for n in archive.namelist()
                         if n.endswith(".dist-info/METADATA")), None)
            text = archive.read(meta).decode("utf-8", "replace") if meta else ""
        for line in text.splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = requirements.Requirement(line.partition(":")[2].strip())  # type: ignore[attr-defined]
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if utils.canonicalize_name(req.name) not in have:  # type: ignore[attr-defined]
                req.marker = None
                missing.append(str(req))
    return sorted(set(missing))


def wheelhouse(dest: Path, extras: str, progress: Callable[[str], None],
               python: str | None = None) -> int:
    """Fill ``dest`` with procgraph's wheel (built now) and its dependencies (cached).

    ``python``: the image's Python version (``3.11.2``), when it differs from the host's;
    requirements whose markers hold there but not here are added. Returns the number of
    wheels. The dependencies' folder is keyed by procgraph's version, the Pythons and the
    extras; delete it to refresh it.
    """
    root = source_root()
    spec = str(root) if root else f"procgraph=={procgraph.__version__}"
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    python = python or platform.python_version()
    key = hashlib.sha256(f"{procgraph.__version__} {tag} {python} {extras}".encode()
                         ).hexdigest()[:12]
    deps = cache_dir() / "wheels" / f"procgraph-{procgraph.__version__}-{tag}-{key}"
    if (deps / ".complete").is_file():
        progress(f"wheelhouse: dependencies from the cache ({deps})")
    else:
        progress(f"wheelhouse: pip wheel {spec}{extras} -> {deps} (first time for this version)")
        shutil.rmtree(deps, ignore_errors=True)
        deps.mkdir(parents=True)
        _pip_wheel(["-w", str(deps), f"{spec}{extras}"], progress)
        for _ in range(5):  # what the image's Python needs besides (and their requirements)
            missing = _missing_requirements(deps, python)
            if not missing:
                break
            progress(f"wheelhouse: for Python {python} also {', '.join(missing)}")
            _pip_wheel(["-w", str(deps), *missing], progress)
        for old in deps.glob("procgraph-*.whl"):  # procgraph itself is built for each image
            old.unlink()
        (deps / ".complete").write_text("")
    dest.mkdir(parents=True, exist_ok=True)
    _pip_wheel(["--no-deps", "-w", str(dest), spec], progress)
    for wheel in deps.glob("*.whl"):
        try:
            os.link(wheel, dest / wheel.name)
        except OSError:
            shutil.copy2(wheel, dest / wheel.name)
    return len(list(dest.glob("*.whl")))


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def app_files(graph_file: Path) -> dict[str, Path]:
    """What goes under /app: image path (``graphs/x.yaml``) -> file on the host.

    The graph's folder becomes ``graphs/``: its top-level graph files, modules and models
    (:data:`APP_SUFFIXES`) and its Python packages (folders with ``__init__.py``). A file that
    an agent's params name by a relative path outside the folder (``../models/x.onnx``) goes
    to the same place relative to ``graphs/`` (``models/x.onnx``).
    """
    folder = graph_file.resolve().parent
    files: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix in APP_SUFFIXES:
            files[f"graphs/{entry.name}"] = entry
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            for sub in sorted(entry.rglob("*")):
                if sub.is_file() and "__pycache__" not in sub.parts and sub.suffix != ".pyc":
                    files[f"graphs/{sub.relative_to(folder).as_posix()}"] = sub
    try:
        doc = yaml.safe_load(graph_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ImageError(f"{graph_file}: not YAML ({exc})") from exc
    agents = doc.get("agents") if isinstance(doc, dict) else None
    for name, agent in (agents or {}).items():
        params = agent.get("params") if isinstance(agent, dict) else None
        for text in _strings(params):
            if "/" not in text or "\n" in text or os.path.isabs(text) or "${" in text:
                continue
            target = (folder / text).resolve()
            if not target.is_file():
                continue
            inside = os.path.relpath(target, folder.parent)
            if inside.startswith(".."):
                msg = (f"agents.{name}.params: {text!r} is outside {folder.parent}: put it in "
                       f"the graph's folder (or beside it) so that it can go into the image")
                raise ImageError(msg)
            if target.is_relative_to(folder):
                files.setdefault(f"graphs/{target.relative_to(folder).as_posix()}", target)
            elif Path(inside).parts[0] == "graphs":
                msg = (f"agents.{name}.params: {text!r} would land on the image's graphs/ "
                       f"folder: move it into {folder}")
                raise ImageError(msg)
            else:
                files.setdefault(Path(inside).as_posix(), target)
    return files


def _docker_client() -> Any:
    from procgraph.dockerengine import EngineUnavailable, engine_client

    try:
        return engine_client(timeout_s=600)
    except EngineUnavailable as exc:
        raise ImageError(str(exc)) from None


def _pick_base(client: Any, base: str | None) -> str:
    from docker.errors import ImageNotFound  # type: ignore[import-untyped]

    for candidate in (base,) if base else DEFAULT_BASES:
        try:
            client.images.get(candidate)
            return candidate
        except ImageNotFound:
            continue
    wanted = base or " or ".join(DEFAULT_BASES)
    raise ImageError(f"base image {wanted} is not in the Docker engine: {MAKE_BASE_HINT}")


def run_in_image(client: Any, image: str, command: list[str],
                 entrypoint: list[str] | None = None, timeout_s: float = 120.0
                 ) -> tuple[int, str]:
    """Run ``command`` in a throw-away container of ``image`` (no network); return its exit
    status and output (stdout + stderr). Unlike ``containers.run`` it leaves no socket open."""
    container = client.containers.create(image, command, entrypoint=entrypoint,
                                         network_mode="none")
    try:
        container.start()
        status = int(container.wait(timeout=timeout_s).get("StatusCode", -1))
        output = bytes(container.logs(stdout=True, stderr=True)).decode("utf-8", "replace")
    finally:
        container.remove(force=True)
    return status, output


def _base_python(client: Any, base: str) -> str:
    """The Python version of the base image (it must match the host's major.minor)."""
    try:
        status, out = run_in_image(client, base, ["python3", "-c", "import platform; "
                                                  "print(platform.python_version())"],
                                   entrypoint=[])
    except Exception as exc:
        status, out = -1, f"{type(exc).__name__}"
    if status != 0:
        msg = f"base image {base}: no python3 in it ({printable(out, 200)}): {MAKE_BASE_HINT}"
        raise ImageError(msg) from None
    version = out.strip()
    if version.split(".")[:2] != platform.python_version().split(".")[:2]:
        msg = (f"base image {base} has Python {version}, this host {platform.python_version()}"
               f": the wheelhouse is built for the host's Python, so use a base with the same "
               f"Python {sys.version_info.major}.{sys.version_info.minor} (or run procgraph "
               f"image build with python{'.'.join(version.split('.')[:2])})")
        raise ImageError(msg)
    return version


def _dockerfile(given: Path | None) -> Path:
    if given is not None:
        if not given.is_file():
            raise ImageError(f"--dockerfile {given}: no such file")
        return given
    root = source_root()
    if root is None or not (root / "deploy" / "Dockerfile").is_file():
        msg = ("deploy/Dockerfile not found (procgraph is not installed from its source): "
               "pass --dockerfile PATH")
        raise ImageError(msg)
    return root / "deploy" / "Dockerfile"


def make_context(graph_file: Path, dest: Path, genicam: bool, dockerfile: Path | None,
                 progress: Callable[[str], None], python: str | None = None) -> None:
    """Write the build context (Dockerfile, wheels/, app/) for ``graph_file`` into ``dest``."""
    files = app_files(graph_file)
    total = sum(p.stat().st_size for p in files.values())
    if total > MAX_APP_BYTES:
        raise ImageError(f"the graph's files are {total >> 20} MB: keep big data out of its folder")
    shutil.copy2(_dockerfile(dockerfile), dest / "Dockerfile")
    for rel, src in files.items():
        (dest / "app" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / "app" / rel)
    progress(f"app: {len(files)} files, {total / 1e6:.1f} MB ({', '.join(sorted(files)[:8])}"
             f"{', ...' if len(files) > 8 else ''})")
    count = wheelhouse(dest / "wheels", "[genicam]" if genicam else "", progress, python)
    progress(f"wheelhouse: {count} wheels")


def build_image(graph_file: Path, tag: str, base: str | None = None, genicam: bool = False,
                dockerfile: Path | None = None, client: Any = None,
                progress: Callable[[str], None] = lambda line: None) -> BuildResult:
    """Build the agent image of ``graph_file`` as ``tag``; ``progress`` gets one line a step.

    ``client``: a docker SDK client (default: ``docker.from_env()``). Raises ImageError with
    what to do when docker, the engine, the base image or a file is missing, or a step fails.
    """
    if not graph_file.is_file():
        raise ImageError(f"{graph_file}: no such graph file")
    started = time.monotonic()
    client = client if client is not None else _docker_client()
    base = _pick_base(client, base)
    python = _base_python(client, base)
    progress(f"base image: {base} (Python {python})")
    with tempfile.TemporaryDirectory(prefix="procgraph-image-") as tmp:
        context = Path(tmp)
        make_context(graph_file, context, genicam, dockerfile, progress, python)
        args = {"PYTHON_IMAGE": base, "GENICAM": "1" if genicam else "0"}
        lines: list[str] = []
        image_id = ""
        stream = client.api.build(path=str(context), tag=tag, buildargs=args, rm=True,
                                  forcerm=True, pull=False, decode=True)
        try:
            for chunk in stream:
                if "error" in chunk:
                    tail = "\n".join(lines[-10:])
                    raise ImageError(f"docker build failed: {chunk['error'].strip()}\n{tail}")
                for line in str(chunk.get("stream", "")).splitlines():
                    if line.strip():
                        lines.append(line)
                        if line.startswith("Step "):
                            progress(line)
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
        finally:
            stream.close()
            client.api.close()  # the build's streamed response keeps its socket otherwise
    image = client.images.get(image_id or tag)
    return BuildResult(tag=tag, image_id=image.id, size_bytes=int(image.attrs["Size"]),
                       seconds=time.monotonic() - started)
