"""How a replica is launched: as a process, or as a container, behind one small handle.

The supervisor (:mod:`procgraph.supervisor`) treats both alike through
:class:`ReplicaHandle`: is it alive and with what exit code (``poll``/``returncode``), which
heartbeat is its own (``owns``), how to end it (``terminate``/``kill``/``wait``), a host pid
the guard can end if the supervisor dies (``pid``), and its output (``stdout``, read by the
supervisor's pump: the ``@pg`` records of :mod:`procgraph.linelogs`).

- :class:`ProcessHandle`: ``procgraph agent ...`` as a child process (``runtime: process``).
- :class:`ForkedHandle`: the same replica forked by the line's fork server
  (:mod:`procgraph.forkserver`), the default for ``runtime: process``: its output comes
  through a pipe passed to the server, its exit code from the server, signals through a pidfd.
- :class:`ContainerHandle`: the same command in a container of the agent's ``image``, through
  the Docker Engine API (the ``docker`` SDK, ``$DOCKER_HOST``): created with the agent's
  ``devices``, ``network`` and ``resources``, its output read from the engine's log stream,
  stopped with SIGTERM then SIGKILL like a process, and removed once it has exited.

Networking: a container runs with host networking unless the agent says ``network: bridge``,
so that the brokers the supervisor gives (an embedded broker binds loopback, protected by its
password) and GigE Vision cameras are reached as from a process. With ``bridge`` every broker
URL must name an address the bridge reaches; a loopback URL is refused with what to do.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from procgraph.constants import ENV_PREFIX
from procgraph.errors import ProcgraphError

if TYPE_CHECKING:
    from procgraph.forkserver import ForkedProcess
    from procgraph.graph import AgentPlan, GraphPlan
    from procgraph.health import Heartbeat

__all__ = ["ContainerHandle", "DockerLauncher", "ForkedHandle", "LaunchError", "ProcessHandle",
           "ReplicaHandle", "container_env"]

log = logging.getLogger("procgraph.replicas")
#: where the image keeps the graph folder (deploy/Dockerfile: /app/graphs)
IMAGE_GRAPHS = "/app/graphs"
#: the labels every replica container carries (``docker ps --filter label=procgraph.graph``)
GRAPH_LABEL = "procgraph.graph"
NODE_LABEL = "procgraph.node"
#: the engine's own log of a container is capped (the supervisor files everything itself)
ENGINE_LOG_MAX = "10m"
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.-]+")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


class LaunchError(ProcgraphError):
    """A replica cannot be launched as the graph asks; the message says what to change."""


class ReplicaHandle(Protocol):
    """One running (or ended) replica, whatever runs it."""

    @property
    def pid(self) -> int:
        """A host process id the guard may end (the container's init, for a container)."""

    @property
    def returncode(self) -> int | None:
        """The exit code once ended, else None."""

    @property
    def stdout(self) -> IO[bytes] | None:
        """Its output (stdout and stderr together), for the supervisor's pump."""

    @property
    def agent_pid(self) -> int | None:
        """The pid the replica itself reports (heartbeat, stopping marker); None: not known
        yet (a container's, until its first heartbeat)."""

    def describe(self) -> str:
        """``pid 123`` or ``container NAME``, for the supervisor's messages."""

    def poll(self) -> int | None:
        """The exit code if it has ended, else None (never blocks)."""

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end; subprocess.TimeoutExpired after ``timeout`` seconds."""

    def owns(self, beat: Heartbeat, host: str) -> bool:
        """True when ``beat`` was written by this very replica (not a predecessor's);
        ``host`` is the supervisor's hostname."""

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM)."""

    def kill(self) -> None:
        """End it now (SIGKILL)."""

    def release(self) -> None:
        """After the end: free what it holds (a container is removed)."""


class ProcessHandle:
    """A replica process (or any :class:`subprocess.Popen` given to the supervisor)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str]) -> ProcessHandle:
        """Start ``argv`` in its own session, its stdout and stderr one pipe."""
        return cls(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True))

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once reaped."""
        return self.proc.returncode

    @property
    def stdout(self) -> IO[bytes] | None:
        """The pipe of its stdout and stderr."""
        return self.proc.stdout

    @property
    def agent_pid(self) -> int | None:
        """The same pid: the replica reports ``os.getpid()``."""
        return self.proc.pid

    def describe(self) -> str:
        """``pid N``."""
        return f"pid {self.proc.pid}"

    def poll(self) -> int | None:
        """``Popen.poll``."""
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        """``Popen.wait``."""
        return self.proc.wait(timeout)

    def owns(self, beat: Heartbeat, host: str) -> bool:
        """Its pid on this host."""
        return beat.pid == self.proc.pid and beat.host in ("", host)

    def terminate(self) -> None:
        """SIGTERM."""
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.proc.send_signal(signal.SIGKILL)

    def release(self) -> None:
        """Nothing to free (the pump closes the pipe)."""


class ForkedHandle(ProcessHandle):
    """A replica forked by the fork server (:class:`procgraph.forkserver.ForkedProcess`):
    the same handle as a spawned process; its exit code is the one the fork server
    reported (-1: it ended while the fork server was gone), signals go through its pidfd."""

    def __init__(self, proc: ForkedProcess) -> None:
        self.proc = proc  # type: ignore[assignment]  # duck-types the Popen calls used


class _StreamReader(io.RawIOBase):
    """The chunks of an engine log stream as a readable byte stream (``readline`` works on
    the :class:`io.BufferedReader` around it); ``ended`` is set at its end."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._chunks: Iterator[bytes] = iter(stream)
        self._left = b""
        self.ended = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            try:
                self._left = bytes(next(self._chunks))
            except StopIteration:
                self.ended.set()
                return 0
            except Exception:  # the engine went away: the output ends here
                self.ended.set()
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self.ended.set()
            with contextlib.suppress(Exception):
                self._stream.close()
        super().close()


class ContainerHandle:
    """A replica container: created, started, watched and removed through the engine."""

    def __init__(self, client: Any, container: Any, hostname: str) -> None:
        self.client = client
        self.container = container
        self.name: str = container.name
        self.hostname = hostname
        self._code: int | None = None
        self._agent_pid: int | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        container.start()
        container.reload()
        self._pid = int(container.attrs["State"].get("Pid") or 0)
        self._reader = _StreamReader(client.api.logs(container.id, stdout=True, stderr=True,
                                                     stream=True, follow=True))
        self._stdout: IO[bytes] = io.BufferedReader(self._reader)
        self._waiter = threading.Thread(target=self._wait_for_exit, name=f"wait-{self.name}",
                                        daemon=True)
        self._waiter.start()

    def _wait_for_exit(self) -> None:
        while True:
            try:
                result = self.client.api.wait(self.container.id, timeout=3600)
                code = int(result.get("StatusCode", -1))
                break
            except Exception:  # a read timeout, or the engine restarting: ask its state
                try:
                    self.container.reload()
                    state = self.container.attrs["State"]
                except Exception as exc:
                    if type(exc).__name__ == "NotFound":
                        code = -1
                        break
                    self._done.wait(1.0)
                    continue
                if not state.get("Running"):
                    code = int(state.get("ExitCode", -1))
                    break
        with self._lock:
            self._code = code
        self._done.set()

    @property
    def pid(self) -> int:
        """The host pid of the container's init (docker-init): the guard ends it, and so the
        container, if the supervisor dies."""
        return self._pid

    @property
    def returncode(self) -> int | None:
        """The container's exit code once it has exited."""
        with self._lock:
            return self._code

    @property
    def stdout(self) -> IO[bytes] | None:
        """The container's output from the engine (stdout and stderr, from its start)."""
        return self._stdout

    @property
    def agent_pid(self) -> int | None:
        """The pid inside the container, learned from its first own heartbeat."""
        return self._agent_pid

    def describe(self) -> str:
        """``container NAME``."""
        return f"container {self.name}"

    def poll(self) -> int | None:
        """The exit code if the container has exited (the waiter thread tells)."""
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the container to exit."""
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.name, timeout or 0.0)
        code = self.returncode
        assert code is not None
        return code

    def owns(self, beat: Heartbeat, host: str) -> bool:
        """A heartbeat from this container's hostname (unique to each container started)."""
        if beat.host != self.hostname:
            return False
        self._agent_pid = beat.pid
        return True

    def _signal(self, name: str) -> None:
        if self._done.is_set():
            return
        try:
            self.container.kill(signal=name)
        except Exception as exc:  # exited meanwhile (409), or already removed (404)
            log.debug("signal %s to %s: %s", name, self.name, exc)

    def terminate(self) -> None:
        """SIGTERM (docker-init passes it to ``procgraph agent``)."""
        self._signal("SIGTERM")

    def kill(self) -> None:
        """SIGKILL."""
        self._signal("SIGKILL")

    def release(self) -> None:
        """Once exited: let the output be read to its end (briefly), then remove it."""
        if not self._done.is_set():
            return
        self._reader.ended.wait(2.0)
        try:
            self.container.remove(force=True)
        except Exception as exc:
            if type(exc).__name__ != "NotFound":
                log.warning("cannot remove container %s: %s", self.name, exc)


def _safe_name(text: str, limit: int) -> str:
    return _NAME_BAD.sub("-", text).strip("-.")[:limit] or "x"


def graph_env_names(graph_file: str | os.PathLike[str]) -> list[str]:
    """The environment variables a graph file names (``${NAME}``, ``${NAME:-default}``)."""
    try:
        text = Path(graph_file).read_text(encoding="utf-8")
    except OSError:
        return []
    return sorted(set(_ENV_REF.findall(text)))


def container_env(plan: GraphPlan, env: dict[str, str]) -> dict[str, str]:
    """What of the replica environment ``env`` goes into a container: procgraph's own
    variables (``PROCGRAPH_*``, ``PYTHONUNBUFFERED``) and those the graph names; not the
    rest of the supervisor's environment (its PATH, HOME, ... are the host's)."""
    keep = set(graph_env_names(plan.file)) | {"PYTHONUNBUFFERED"}
    return {k: v for k, v in env.items() if k.startswith(ENV_PREFIX) or k in keep}


def _device(text: str) -> str:
    parts = text.split(":")
    if len(parts) == 1:
        return f"{text}:{text}:rwm"
    if len(parts) == 2:
        return f"{text}:rwm"
    return text


class DockerLauncher:
    """Starts replica containers for one supervisor, with one docker SDK client."""

    def __init__(self, plan: GraphPlan, node: str | None, client: Any = None) -> None:
        self.plan = plan
        self.node = node
        self._client = client
        self._own_client = client is None
        self._swept = False

    @property
    def client(self) -> Any:
        """The docker SDK client (``$DOCKER_HOST``), made on first use."""
        if self._client is None:
            from procgraph.dockerengine import EngineUnavailable, engine_client

            size = 8 + 3 * sum(a.replicas for a in self.plan.agents.values())
            try:
                self._client = engine_client(timeout_s=60, pool_size=size)
            except EngineUnavailable as exc:
                raise LaunchError(f"runtime docker: {exc}") from None
        return self._client

    def check(self, agent: AgentPlan, urls: dict[str, str]) -> None:
        """LaunchError when ``agent`` cannot run as a container as given."""
        if not agent.image:
            raise LaunchError(f"agent {agent.name!r} runs as a container but has no image: "
                              "give image: in the graph or procgraph run --image IMAGE "
                              "(procgraph image build makes one)")
        if agent.network == "bridge":
            for name, url in urls.items():
                host = urlsplit(url).hostname or ""
                if host in _LOOPBACK or host.startswith("127."):
                    raise LaunchError(
                        f"agent {agent.name!r} has network: bridge, but broker {name!r} is on "
                        f"loopback ({host}), which a bridged container cannot reach: use "
                        "network: host, or a broker bound to an address of the bridge")

    def _sweep(self) -> None:
        """Remove this line's containers left exited by a supervisor that died (its guard
        ended them, but only the engine can remove them)."""
        self._swept = True
        labels = [f"{GRAPH_LABEL}={self.plan.name}"]
        if self.node is not None:
            labels.append(f"{NODE_LABEL}={self.node}")
        with contextlib.suppress(Exception):
            for old in self.client.containers.list(all=True, filters={
                    "label": labels, "status": "exited"}):
                old.remove(force=True)

    def launch(self, agent: AgentPlan, index: int, restarts: int, env: dict[str, str],
               urls: dict[str, str]) -> ContainerHandle:
        """Create and start the container of ``agent[index]`` running ``procgraph agent``."""
        from docker.types import LogConfig  # type: ignore[import-untyped]

        self.check(agent, urls)
        if not self._swept:
            self._sweep()
        token = secrets.token_hex(3)
        name = _safe_name(f"pg-{self.plan.name}-{agent.name}-{index}-r{restarts}-{token}", 120)
        # the heartbeat's host: unique to this container, so a predecessor's never counts
        hostname = _safe_name(f"pg-{agent.name}-{index}-r{restarts}", 55).lower().replace(
            "_", "-").replace(".", "-") + f"-{token}"
        graph = Path(self.plan.file).resolve()
        inside = f"{IMAGE_GRAPHS}/{graph.name}"
        labels = {GRAPH_LABEL: self.plan.name, "procgraph.agent": agent.name,
                  "procgraph.replica": str(index)}
        if self.node is not None:
            labels[NODE_LABEL] = self.node
        kwargs: dict[str, Any] = {
            "command": ["agent", inside, agent.name, str(index)],
            "name": name, "hostname": hostname, "labels": labels, "detach": True,
            "environment": container_env(self.plan, env),
            "network_mode": agent.network or "host",
            "init": True,
            # the graph the supervisor runs, over the image's copy (models etc. come from it)
            "volumes": {str(graph): {"bind": inside, "mode": "ro"}},
            "devices": [_device(d) for d in agent.devices],
            "log_config": LogConfig(type="json-file",
                                    config={"max-size": ENGINE_LOG_MAX, "max-file": "1"}),
        }
        if agent.resources is not None:
            if agent.resources.cpus is not None:
                kwargs["nano_cpus"] = int(agent.resources.cpus * 1e9)
            if agent.resources.memory_mb is not None:
                kwargs["mem_limit"] = f"{agent.resources.memory_mb}m"
        try:
            container = self.client.containers.create(agent.image, **kwargs)
        except Exception as exc:
            detail = getattr(exc, "explanation", None) or str(exc)
            hint = ("build it with procgraph image build, or give another image"
                    if type(exc).__name__ == "ImageNotFound" else "see the engine's message")
            raise LaunchError(f"cannot create the container of {agent.name}[{index}] from "
                              f"image {agent.image!r}: {detail}; {hint}") from None
        try:
            return ContainerHandle(self.client, container, hostname)
        except Exception as exc:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            detail = getattr(exc, "explanation", None) or str(exc)
            raise LaunchError(f"cannot start the container of {agent.name}[{index}]: "
                              f"{detail}") from None

    def close(self) -> None:
        """Close the client (once every container is stopped and removed)."""
        if self._client is not None and self._own_client:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = None
