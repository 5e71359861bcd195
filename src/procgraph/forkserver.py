"""The fork server: replicas forked from one process that imported the heavy libraries once.

A replica started as ``python -m procgraph agent ...`` spends most of its start importing
(numpy, cv2, pydantic, redis, procgraph, the CLI) and loading the graph again; nine of them
on two cores take seconds. The supervisor instead starts one fork server per line
(``python -m procgraph.forkserver``) that imports those libraries and the graph's agent
modules once, with no thread running, then forks each replica on request: the child has
everything imported already, shares those pages copy-on-write, and runs
:func:`procgraph.runtime.run_replica` at once.

Protocol (one ``SOCK_SEQPACKET`` Unix socket pair, JSON messages, never pickle):

- server -> supervisor, once: ``{"op": "ready", "pid", "took_s"}`` or
  ``{"op": "refused", "reason"}`` (the supervisor then spawns replicas itself);
- supervisor -> server: ``{"op": "spawn", "id", "agent", "replica", "env", "cwd", "argv"}``
  with the write end of the replica's output pipe attached (``SCM_RIGHTS``); the child gets
  it as stdout and stderr, so the supervisor's log pump reads it as it reads a ``Popen`` pipe;
- server -> supervisor: ``{"op": "started", "id", "pid"}`` with a pidfd of the child
  attached (signals through it never hit a reused pid), or ``{"op": "error", "id", "error"}``;
- server -> supervisor: ``{"op": "exit", "pid", "code"}`` when a child ends (``code`` as
  ``Popen.returncode``: negative for a signal).

Fork safety: the server never starts a thread; OpenBLAS is told to use one thread
(``OPENBLAS_NUM_THREADS=1`` unless the environment says otherwise), so numpy's and cv2's
pools are not started; onnxruntime (which starts a thread at import) is not preloaded; before
each fork the server counts its threads and refuses to fork with more than one. ``gc.freeze``
keeps the collector from touching (and so copying) the shared objects. Each child starts a new
session, takes the env, cwd and command line (``ps`` shows ``procgraph agent GRAPH AGENT N``)
the supervisor gives it, and reseeds numpy's global generator.

Orphans: the server exits when the supervisor's end of the socket closes (a ``kill -9``
included); its replicas then see their parent change (``AgentRunner.watch_parent``) and exit,
and the guard ends them too. A server that dies makes the supervisor spawn as before, saying so.
Off switch: ``PROCGRAPH_FORKSERVER=0`` (:func:`enabled`).
"""

from __future__ import annotations

import array
import atexit
import contextlib
import ctypes
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["ForkServer", "ForkServerGone", "ForkedProcess", "enabled"]

#: modules imported before the graph (the replica's own path; the agents add theirs)
PRELOAD = ("numpy", "cv2", "pydantic", "pydantic_settings", "redis", "yaml",
           "procgraph.runtime", "procgraph.brokers", "procgraph.graph")
#: the largest message (a replica's environment is the bulk of it)
MAX_MESSAGE = 1 << 20
#: how long the supervisor waits for the server's ready (its imports and the graph)
READY_TIMEOUT_S = 60.0
#: how long the supervisor waits for the answer to one spawn
SPAWN_TIMEOUT_S = 10.0
#: how long a replica seen gone (its pidfd readable) may wait for its exit code
EXIT_REPORT_S = 5.0


class ForkServerGone(Exception):
    """The fork server cannot start a replica (gone, refused, or no answer); spawn instead."""


def enabled() -> bool:
    """True unless the fork server is turned off (``PROCGRAPH_FORKSERVER=0``, read through
    :mod:`procgraph.settings` where it has that field)."""
    from procgraph.settings import load_settings

    return bool(getattr(load_settings(), "forkserver", True))


def _send(sock: socket.socket, message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
    data = json.dumps(message).encode()
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], anc)


def _recv(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the fds that came with it; (None, []) at the end of the socket."""
    fds = array.array("i")
    data, anc, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(16 * fds.itemsize))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        for fd in fds:
            os.close(fd)
        return {"op": "garbled"}, []
    return message, list(fds)


# -- the supervisor's side -----------------------------------------------------------------
class ForkedProcess:
    """A replica forked by the fork server, as the supervisor sees it (pid, pidfd, output
    pipe, exit code once the server reports it). :class:`procgraph.replicas.ForkedHandle`
    wraps it for the supervisor."""

    def __init__(self, server: ForkServer, pid: int, pidfd: int, stdout: IO[bytes]) -> None:
        self.server = server
        self.pid = pid
        self.pidfd = pidfd
        self.stdout = stdout
        self.returncode: int | None = None
        self.ended = threading.Event()
        #: held while the pidfd is used or closed (the reader thread closes it on the exit
        #: report while the supervisor's threads poll and signal through it)
        self._fd_lock = threading.Lock()
        #: when the process was first seen gone with no exit code reported yet
        self._gone_at: float | None = None

    def _exited(self) -> bool:
        """True once the process is gone (its pidfd readable), whoever reaped it."""
        with self._fd_lock:
            if self.pidfd < 0:
                return True
            readable, _, _ = select.select([self.pidfd], [], [], 0)
            return bool(readable)

    def poll(self) -> int | None:
        """The exit code once reported; -1 when the process is gone and the server died, or
        sent no exit code within :data:`EXIT_REPORT_S` (the supervisor must not wait for a
        report that never comes)."""
        if self.returncode is None and self._exited():
            now = time.monotonic()
            if self._gone_at is None:
                self._gone_at = now
            if self.server.gone or now - self._gone_at > EXIT_REPORT_S:
                if not self.server.gone:
                    self.server.say(f"replica pid {self.pid} ended but the fork server "
                                    f"reported no exit code in {EXIT_REPORT_S:g} s; taken "
                                    "as -1")
                self._set(-1)
        return self.returncode

    def _set(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self.ended.set()
            with self._fd_lock:
                if self.pidfd >= 0:
                    os.close(self.pidfd)
                    self.pidfd = -1

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end; subprocess.TimeoutExpired after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            self.ended.wait(left)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """Signal it through its pidfd (never a reused pid); nothing once it has ended."""
        with self._fd_lock:
            if self.returncode is not None or self.pidfd < 0:
                return
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, signum)


class ForkServer:
    """The supervisor's side: starts the server process, asks it for replicas, hears their
    exits. ``say`` gets one line for what the user must know (a refusal, the server gone)."""

    def __init__(self, graph_file: str, env: dict[str, str], say: Callable[[str], None],
                 pad: int = 64) -> None:
        self.say = say
        self.gone = False
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._refused: str | None = None
        self._next_id = 0
        self._answers: dict[int, tuple[dict[str, Any], list[int]]] = {}
        self._answered = threading.Condition(self._lock)
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}
        self._said_gone = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        server_env = dict(env)
        server_env.setdefault("OPENBLAS_NUM_THREADS", "1")
        server_env["PYTHONUNBUFFERED"] = "1"
        # the last argument is room for the replicas' command lines (procgraph agent ...)
        argv = [sys.executable, "-m", "procgraph.forkserver", str(theirs.fileno()),
                str(graph_file), " " * pad]
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=server_env, pass_fds=(theirs.fileno(),),
                start_new_session=True)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, name="forkserver", daemon=True)
        self._reader.start()
        self._pump = threading.Thread(target=self._pump_output, name="forkserver-out",
                                      daemon=True)
        self._pump.start()

    def _pump_output(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.say(f"fork server: {line}")
        self.proc.stdout.close()

    def _read(self) -> None:
        try:
            while True:
                message, fds = _recv(self.sock)
                if message is None:
                    break
                self._handle(message, fds)
        except OSError:
            pass
        self._lost()

    def _handle(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message.get("op")
        if op == "ready":
            self._ready.set()
        elif op == "refused":
            self._refused = str(message.get("reason", "no reason given"))
            self._ready.set()
        elif op in ("started", "error") and isinstance(message.get("id"), int):
            with self._answered:
                self._answers[message["id"]] = (message, fds)
                self._answered.notify_all()
            return
        elif op == "exit" and isinstance(message.get("pid"), int) \
                and isinstance(message.get("code"), int):
            with self._lock:
                child = self._children.pop(message["pid"], None)
                if child is None:
                    self._early_exits[message["pid"]] = message["code"]
            if child is not None:
                child._set(message["code"])
        for fd in fds:
            os.close(fd)

    def _lost(self) -> None:
        with self._answered:
            self.gone = True
            self._answered.notify_all()
        self._ready.set()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until the server has imported everything; ForkServerGone if it refused,
        died, or took longer than ``timeout_s``."""
        if not self._ready.wait(timeout_s):
            raise ForkServerGone(f"not ready after {timeout_s:g}s")
        if self._refused is not None:
            raise ForkServerGone(self._refused)
        if self.gone:
            raise ForkServerGone(f"it exited with code {self.proc.poll()}")

    def spawn(self, agent: str, replica: int, argv: list[str], env: dict[str, str],
              cwd: str | None = None) -> ForkedProcess:
        """Fork one replica; ForkServerGone when the server cannot (the caller spawns)."""
        self.wait_ready()
        read_fd, write_fd = os.pipe()
        try:
            with self._lock:
                self._next_id += 1
                ident = self._next_id
            request = {"op": "spawn", "id": ident, "agent": agent, "replica": replica,
                       "env": env, "cwd": cwd or os.getcwd(), "argv": argv}
            try:
                _send(self.sock, request, (write_fd,))
            except OSError as exc:
                self._lost()
                raise ForkServerGone(f"it is gone ({exc.strerror or exc})") from None
        finally:
            os.close(write_fd)
        deadline = time.monotonic() + SPAWN_TIMEOUT_S
        with self._answered:
            while ident not in self._answers and not self.gone:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._answered.wait(left)
            answer = self._answers.pop(ident, None)
        if answer is None:
            os.close(read_fd)
            raise ForkServerGone("it is gone" if self.gone else
                                 f"no answer within {SPAWN_TIMEOUT_S:g}s")
        message, fds = answer
        if message.get("op") != "started" or not fds or not isinstance(message.get("pid"), int):
            for fd in fds:
                os.close(fd)
            os.close(read_fd)
            raise ForkServerGone(str(message.get("error", "it could not fork")))
        for fd in fds[1:]:
            os.close(fd)
        child = ForkedProcess(self, message["pid"], fds[0], os.fdopen(read_fd, "rb"))
        with self._lock:
            early = self._early_exits.pop(child.pid, None)
            if early is None:
                self._children[child.pid] = child
        if early is not None:
            child._set(early)
        return child

    def close(self) -> None:
        """Stop the server (its replicas are stopped already)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(2)
        self._pump.join(2)
        with contextlib.suppress(OSError):
            self.sock.close()


# -- the server process ------------------------------------------------------------------
def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


class _Server:
    """The fork server's loop (one thread, always)."""

    def __init__(self, sock: socket.socket, graph_file: str) -> None:
        self.sock = sock
        self.graph_file = graph_file
        self.plan: Any = None
        self.plan_key: tuple[Any, ...] | None = None
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)

    def graph_key(self, env: dict[str, str]) -> tuple[Any, ...] | None:
        """What the loaded plan depends on: the file's size and mtime, and the values of the
        variables it names; None when the file cannot be read."""
        from procgraph.replicas import graph_env_names

        try:
            st = os.stat(self.graph_file)
        except OSError:
            return None
        names = graph_env_names(self.graph_file)
        return (st.st_size, st.st_mtime_ns, tuple(env.get(n) for n in names))

    def preload(self) -> str | None:
        """Import everything once; the reason not to fork, or None."""
        import importlib

        for name in PRELOAD:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        if _threads() > 1:
            return (f"{_threads()} threads after importing the libraries (set "
                    "OPENBLAS_NUM_THREADS=1?)")
        from procgraph.graph import load_graph

        self.plan_key = self.graph_key(dict(os.environ))
        try:
            self.plan = load_graph(self.graph_file, warn=lambda line: None)
        except Exception as exc:  # the replicas load it themselves and say what is wrong
            self.plan = None
            print(f"cannot preload the graph: {exc}", flush=True)
        if _threads() > 1:
            return (f"{_threads()} threads after importing the graph's agent modules (a "
                    "module starts a thread when imported)")
        return None

    def on_child(self, signum: int, frame: Any) -> None:
        """SIGCHLD: wake the loop (it reaps outside the handler)."""
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"c")

    def reap(self) -> None:
        """Reap every ended child; tell the supervisor each exit code."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            _send(self.sock, {"op": "exit", "pid": pid,
                              "code": os.waitstatus_to_exitcode(status)})

    def serve(self) -> None:
        """Answer spawn requests and report exits until the supervisor's end closes."""
        signal.signal(signal.SIGCHLD, self.on_child)
        while True:
            sock = self.sock.fileno()
            readable, _, _ = select.select([sock, self.wake_r], [], [])
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
                self.reap()
            if sock in readable:
                message, fds = _recv(self.sock)
                if message is None:
                    return
                if message.get("op") == "spawn":
                    self.spawn(message, fds)
                else:
                    for fd in fds:
                        os.close(fd)
            self.reap()

    def spawn(self, req: dict[str, Any], fds: list[int]) -> None:
        """Fork one replica (``fds[0]``: its output pipe); answer with its pid and pidfd."""
        ident = req.get("id")
        if not fds or not isinstance(req.get("env"), dict) or not isinstance(
                req.get("agent"), str) or not isinstance(req.get("replica"), int):
            for fd in fds:
                os.close(fd)
            _send(self.sock, {"op": "error", "id": ident, "error": "malformed request"})
            return
        if _threads() > 1:
            for fd in fds:
                os.close(fd)
            _send(self.sock, {"op": "error", "id": ident,
                              "error": f"{_threads()} threads in the fork server"})
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.child(req, fds[0])  # never returns
        for fd in fds:
            os.close(fd)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            _send(self.sock, {"op": "error", "id": ident, "error": f"pidfd_open: {exc}"})
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            return
        try:
            _send(self.sock, {"op": "started", "id": ident, "pid": pid}, (pidfd,))
        finally:
            os.close(pidfd)

    def child(self, req: dict[str, Any], out_fd: int) -> None:
        """In the forked child: become the replica, run it, exit (never returns)."""
        code = 1
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()
            self.sock.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            os.close(out_fd)
            env = {str(k): str(v) for k, v in req["env"].items()}
            os.environ.clear()
            os.environ.update(env)
            cwd = req.get("cwd")
            if isinstance(cwd, str):
                os.chdir(cwd)
            argv = [str(a) for a in req.get("argv") or []]
            if argv:  # as `python -m procgraph agent ...` would have them
                import procgraph

                main = os.path.join(os.path.dirname(procgraph.__file__), "__main__.py")
                sys.argv = ([main, *argv[3:]]
                            if argv[1:2] == ["-m"] else argv[1:])
                _set_title(argv)
            numpy = sys.modules.get("numpy")
            if numpy is not None:
                numpy.random.seed()
            gc.enable()
            code = self.run_replica(req["agent"], req["replica"], env)
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            with contextlib.suppress(BaseException):
                threading._shutdown()  # type: ignore[attr-defined]
            with contextlib.suppress(BaseException):
                atexit._run_exitfuncs()
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def run_replica(self, agent: str, replica: int, env: dict[str, str]) -> int:
        """What ``procgraph agent`` does under a supervisor, with the graph loaded once
        (loaded again, as a spawned replica would, when the file or its variables changed)."""
        from procgraph.brokers import resolve_broker_urls
        from procgraph.graph import load_graph
        from procgraph.runtime import run_replica
        from procgraph.settings import load_settings

        plan = self.plan
        if plan is None or self.graph_key(env) != self.plan_key:
            plan = load_graph(self.graph_file, warn=lambda line: None)  # as spawned
        urls = resolve_broker_urls(plan, brokers={}, given=load_settings().brokers)
        run_replica(plan, agent, replica, urls, parent="fork server")
        return 0


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _set_title(argv: list[str]) -> None:
    """Make ``/proc/self/cmdline`` (``ps``) show ``argv``: written over this process's own
    argument area, as long as it fits (the server's command line leaves room)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])
    except (OSError, IndexError, ValueError):
        return
    title = "\0".join(argv).encode(errors="replace")[:max(0, end - start - 1)]
    if end <= start or not title:
        return
    ctypes.memmove(start, title, len(title))
    ctypes.memset(start + len(title), 0, end - start - len(title))


def main() -> None:
    """``python -m procgraph.forkserver FD GRAPH [PAD]``: the server process."""
    started = time.monotonic()
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    gc.disable()
    sock = socket.socket(fileno=int(sys.argv[1]))
    server = _Server(sock, sys.argv[2])
    try:
        reason = server.preload()
    except BaseException as exc:  # said to the supervisor, which spawns instead
        reason = f"preload failed: {type(exc).__name__}: {exc}"
    gc.freeze()
    gc.enable()
    # as in a process started afresh (run_replica installs its own SIGINT/SIGTERM handlers)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        if reason is not None:
            _send(sock, {"op": "refused", "reason": reason})
            return
        _send(sock, {"op": "ready", "pid": os.getpid(),
                     "took_s": round(time.monotonic() - started, 3)})
        server.serve()
    except (BrokenPipeError, ConnectionError):
        return


if __name__ == "__main__":
    main()
