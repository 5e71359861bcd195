"""Run records: how a running line can be found, listed and stopped from another shell.

While ``procgraph run`` supervises a line it keeps a small JSON record in the line's state
folder (:func:`procgraph.durability.graph_state_dir`): ``<state folder>/run.json``
(``run-<node>.json`` for ``run --node NODE``), mode 0600 because broker URLs may hold a
password. Fields: ``graph``, ``file`` (absolute), ``pid`` (the supervisor), ``host``,
``node``, ``started`` (Unix time), ``brokers`` (name -> URL), ``hmi_url``, ``metrics_url``
and ``state`` (``starting``, ``started``, ``stopping``). A pointer to the record is kept in
``<state root>/runs/`` so a run with its own ``--state-dir`` is found too. The record is
removed when the line stops cleanly; a record whose pid is gone (same host) is stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from procgraph.durability import default_state_root

if TYPE_CHECKING:
    from procgraph.graph import GraphPlan

#: the record's file name in the state folder (no ``--node``)
RECORD_NAME = "run.json"
#: the folder, under the state root, holding one pointer per running line
INDEX_DIRNAME = "runs"
#: what ``state`` may say
STATES = ("starting", "started", "stopping")
_LOCK = threading.Lock()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def record_path(state_dir: str | os.PathLike[str], node: str | None = None) -> Path:
    """The record's path in the graph state folder ``state_dir``."""
    name = RECORD_NAME if node is None else f"run-{_UNSAFE.sub('_', node)}.json"
    return Path(state_dir) / name


def _pointer(graph: str, pid: int) -> Path:
    return default_state_root() / INDEX_DIRNAME / f"{_UNSAFE.sub('_', graph)}.{pid}"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _resolve_record(where: str | os.PathLike[str]) -> Path:
    path = Path(where)
    return path if path.suffix == ".json" else path / RECORD_NAME


def write_record(path: Path, **fields: Any) -> None:
    """Write a new record at ``path`` (and its pointer in the state root)."""
    with _LOCK:
        _write_private(path, json.dumps(fields, indent=1))
        with contextlib.suppress(OSError):
            _write_private(_pointer(str(fields.get("graph", "")), int(fields.get("pid", 0))),
                           str(path.resolve()) + "\n")


def update_record(state_dir: str | os.PathLike[str], **fields: Any) -> bool:
    """Set ``fields`` in the record of the line (e.g. ``metrics_url=...``).

    ``state_dir`` is the graph state folder (its ``run.json``) or the record's path
    (``Supervisor.run_record``). Returns False when there is no record (nothing written).
    """
    path = _resolve_record(state_dir)
    with _LOCK:
        data = _read(path)
        if data is None:
            return False
        data.update(fields)
        _write_private(path, json.dumps(data, indent=1))
    return True


def remove_record(path: Path) -> None:
    """Remove the record at ``path`` and its pointer, if they are this process's."""
    with _LOCK:
        data = _read(path)
        if data is None or data.get("pid") != os.getpid():
            return
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            _pointer(str(data.get("graph", "")), os.getpid()).unlink()


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs on this machine (a zombie does not)."""
    if pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state != "Z"


@dataclass
class RunRecord:
    """One run record, as read back."""

    path: Path
    graph: str
    file: str
    pid: int
    host: str
    node: str | None
    started: float
    brokers: dict[str, str] = field(default_factory=dict)
    hmi_url: str | None = None
    metrics_url: str | None = None
    state: str = "starting"
    #: the folder of the line's log files (procgraph.logfiles)
    log_dir: str | None = None

    @classmethod
    def load(cls, path: Path) -> RunRecord | None:
        """The record at ``path`` (None: missing or not a record)."""
        data = _read(path)
        if data is None:
            return None
        try:
            brokers = data.get("brokers") or {}
            return cls(path=path, graph=str(data["graph"]), file=str(data.get("file", "")),
                       pid=int(data["pid"]), host=str(data.get("host", "")),
                       node=data.get("node"), started=float(data.get("started", 0.0)),
                       brokers={str(k): str(v) for k, v in dict(brokers).items()},
                       hmi_url=data.get("hmi_url"), metrics_url=data.get("metrics_url"),
                       state=str(data.get("state", "starting")),
                       log_dir=str(data["log_dir"]) if data.get("log_dir") else None)
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def local(self) -> bool:
        """True when the line runs (or ran) on this machine."""
        return self.host in ("", socket.gethostname())

    @property
    def stale(self) -> bool:
        """True when the supervisor that wrote it is gone (known only on its own host)."""
        return self.local and not pid_alive(self.pid)

    @property
    def uptime_s(self) -> float:
        """Seconds since the line started."""
        return max(0.0, time.time() - self.started)


def find_runs(include_stale: bool = False) -> list[RunRecord]:
    """Every run record reachable from this machine's state root, oldest first.

    Records are found through the pointers in ``<state root>/runs/`` and in the state
    folders under the state root. Stale records (pid gone) only with ``include_stale``.
    """
    root = default_state_root()
    paths: set[Path] = set()
    index = root / INDEX_DIRNAME
    if index.is_dir():
        for ptr in index.iterdir():
            with contextlib.suppress(OSError):
                target = Path(ptr.read_text(encoding="utf-8").strip())
                if target.is_file():
                    paths.add(target.resolve())
                else:
                    ptr.unlink()  # its record is gone
    if root.is_dir():
        for folder in root.iterdir():
            if folder.is_dir() and folder.name != INDEX_DIRNAME:
                paths.update(p.resolve() for p in folder.glob("run*.json"))
    records = [r for r in (RunRecord.load(p) for p in paths) if r is not None]
    if not include_stale:
        records = [r for r in records if not r.stale]
    return sorted(records, key=lambda r: (r.started, r.graph))


def runs_of(target: str, include_stale: bool = False) -> list[RunRecord]:
    """The run records of graph ``target``: a graph name or the path of its file."""
    as_file = str(Path(target).expanduser().resolve()) if (
        "/" in target or target.endswith((".yaml", ".yml"))) else None
    return [r for r in find_runs(include_stale)
            if r.graph == target or (as_file is not None and r.file == as_file)]


def hmi_url(plan: GraphPlan, node: str | None = None) -> str | None:
    """The URL of the first agent (on ``node``) whose class serves the public page
    (``serves = "public"``, the HMI) on ``params.port``."""
    from procgraph.graph import agent_class

    for agent in plan.agents_on(node):
        port = agent.params.get("port")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if not isinstance(port, int) or port <= 0:
            continue  # checked first: only an agent with a port has its class imported here
        try:
            serves = agent_class(plan, agent.name).serves
        except Exception:  # a class that fails to import serves nothing here
            continue
        if serves != "public":
            continue
        host = agent.params.get("host") or "127.0.0.1"
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"
    return None
