"""One line, one owner: the lease a running supervisor holds, and the local lock beside it.

- **The lease**: ``pg:<graph>:lease`` (:func:`procgraph.constants.lease_key`; per node with
  ``--node``) in each broker the line uses, a JSON :class:`Holder` (host, pid, start time, graph
  file) with a TTL of :data:`LEASE_TTL_S`, renewed by the supervisor every
  :data:`RENEW_EVERY_S`. A second supervisor of the same graph finds it and is refused.
- **The local lock**: ``<state folder>/supervisor.lock`` (``fcntl.flock``), taken before the
  supervisor starts brokers of its own, so a second run on this host is refused before it
  touches the first run's broker port or data folder. The kernel drops it when the process
  ends, ``kill -9`` included.

A lease left by a supervisor that died (same host, pid gone) is taken over at once; one left
on another host expires after :data:`LEASE_TTL_S`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import redis

from procgraph.constants import lease_key
from procgraph.errors import ProcgraphError, broker_unavailable_as

LEASE_TTL_S = 10.0
RENEW_EVERY_S = 2.0

_RENEW = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Holder:
    """Who runs a line: the supervisor process and the graph file it runs."""

    host: str
    pid: int
    started: float
    file: str
    node: str | None = None

    @classmethod
    def me(cls, file: str, node: str | None = None) -> Holder:
        """This process."""
        return cls(socket.gethostname(), os.getpid(), round(time.time(), 3), file, node)

    def to_json(self) -> str:
        """The stored value."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def parse(cls, raw: bytes | str | None) -> Holder | None:
        """A holder from its stored value (None: absent or unreadable)."""
        if raw is None:
            return None
        try:
            data: dict[str, Any] = json.loads(raw)
            return cls(str(data["host"]), int(data["pid"]), float(data["started"]),
                       str(data.get("file", "")), data.get("node"))
        except (ValueError, KeyError, TypeError):
            return None

    def is_dead_here(self) -> bool:
        """True when this holder ran on this host and its process is gone."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self) -> str:
        """``pid 123 on host h, started 2024-05-01 10:00:00, running FILE``."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        node = f" (node {self.node})" if self.node else ""
        return f"pid {self.pid} on host {self.host}, started {when}, running {self.file}{node}"


class LineHeld(ProcgraphError):
    """Another supervisor runs this line."""

    def __init__(self, graph: str, holder: Holder | None, where: str) -> None:
        self.holder = holder
        who = holder.describe() if holder is not None else "another process"
        how = (f"stop it with `kill -TERM {holder.pid}` on {holder.host} (or Ctrl-C in its "
               "terminal)" if holder is not None else "stop that supervisor")
        super().__init__(
            f"graph {graph!r} is already running ({where}): supervisor {who}; {how}, then "
            f"run again (a supervisor that died frees it within {LEASE_TTL_S:g} s)")


class LocalLock:
    """The state folder's ``supervisor.lock``: one supervisor per graph (and node) per host."""

    def __init__(self, folder: Path, graph: str, holder: Holder) -> None:
        name = "supervisor.lock" if holder.node is None else f"supervisor-{holder.node}.lock"
        self.path = folder / name
        self.graph = graph
        self.holder = holder
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`LineHeld` naming its holder."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115  (held until release)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = Holder.parse(f.read() or None)
            f.close()
            raise LineHeld(self.graph, holder, f"lock {self.path}") from None
        f.seek(0)
        f.truncate()
        f.write(self.holder.to_json())
        f.flush()
        self._file = f

    def fileno(self) -> int:
        """The locked file's descriptor (-1 when not held); a child that inherits it keeps
        the lock held until it exits too."""
        return self._file.fileno() if self._file is not None else -1

    def release(self) -> None:
        """Drop the lock (the file stays; its content is the last holder)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class Lease:
    """The line's lease in each broker it uses: acquire, renew, release."""

    def __init__(self, graph: str, holder: Holder, clients: dict[str, redis.Redis],
                 ttl_s: float = LEASE_TTL_S) -> None:
        self.graph = graph
        self.holder = holder
        self.clients = clients
        self.key = lease_key(graph, holder.node)
        self.value = holder.to_json()
        self.ttl_ms = int(ttl_s * 1000)
        self.held: list[str] = []

    def acquire(self) -> None:
        """Take the lease in every broker, or raise :class:`LineHeld` (BrokerUnavailable)."""
        for name, client in self.clients.items():
            with broker_unavailable_as(f"take the lease of graph {self.graph!r}"):
                if not client.set(self.key, self.value, px=self.ttl_ms, nx=True):
                    raw = client.get(self.key)
                    holder = Holder.parse(raw)
                    if raw != self.value.encode() and not (holder and holder.is_dead_here()):
                        self.release()
                        raise LineHeld(self.graph, holder, f"lease {self.key} in broker "
                                       f"{name!r}")
                    client.set(self.key, self.value, px=self.ttl_ms)
            self.held.append(name)

    def renew(self) -> list[tuple[str, Holder | None]]:
        """Extend the lease; returns the brokers where another supervisor holds it now."""
        lost: list[tuple[str, Holder | None]] = []
        for name in self.held:
            client = self.clients[name]
            with broker_unavailable_as(f"renew the lease of graph {self.graph!r}"):
                if not client.eval(_RENEW, 1, self.key, self.value, self.ttl_ms):
                    lost.append((name, Holder.parse(client.get(self.key))))
        return lost

    def release(self) -> None:
        """Give the lease back where it is still ours (a broker that is down: it expires)."""
        for name in self.held:
            with contextlib.suppress(Exception):
                self.clients[name].eval(_RELEASE, 1, self.key, self.value)
        self.held.clear()
