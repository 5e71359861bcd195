"""The HMI's web server: uvicorn, bounded against clients that hold connections open.

uvicorn 0.54 (h11) closes an idle keep-alive connection after ``timeout_keep_alive``, but
only once a response has been sent: a connection that never sends a request, or stops in
the middle of its request line or headers, is kept forever. Enough of them use up the
process's file descriptors and the page stops answering everyone. So the server here:

- gives every connection ``HEADER_TIMEOUT_S`` to send a complete request head, from when it
  opens and again after each response (:class:`GuardedH11Protocol`);
- keeps at most ``max_connections`` open: when one more arrives, the oldest connection that
  is not in the middle of a request (nothing sent yet, half a request line, or idle
  keep-alive) is closed to make room; when every one is busy, the new one is closed;
- accepts in small batches (``BACKLOG``), so a burst of connections cannot take the file
  descriptors before the cap is applied;
- raises the process's soft ``RLIMIT_NOFILE`` to its hard limit (:func:`raise_nofile`), and
  sizes the cap below the soft limit.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, ClassVar

import h11
from starlette.types import ASGIApp
from uvicorn import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

#: seconds a connection has to send a whole request head (request line and headers)
HEADER_TIMEOUT_S = 10.0
#: seconds an idle keep-alive connection is kept after a response (uvicorn's setting)
KEEP_ALIVE_S = 5
#: the most connections open at once (operators' browsers need a few each)
MAX_CONNECTIONS = 512
#: connections accepted per wake-up, and the kernel's queue of connections not yet accepted
BACKLOG = 256
#: file descriptors left for everything else in the process (broker clients, logs, pipes)
FD_RESERVE = 64
#: the soft RLIMIT_NOFILE is raised at most this far
NOFILE_TARGET = 65536
#: the longest request head accepted (bytes), as h11's default
MAX_HEAD_BYTES = 16 * 1024

log = logging.getLogger("procgraph.agents.hmi.server")


def raise_nofile(target: int = NOFILE_TARGET) -> int:
    """Raise the soft RLIMIT_NOFILE toward the hard limit (at most ``target``); the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:  # a sandbox may refuse
            log.debug("could not raise RLIMIT_NOFILE to %d: %s", want, exc)
    return NOFILE_TARGET if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(wanted: int = MAX_CONNECTIONS, soft_nofile: int | None = None) -> int:
    """How many connections to keep: ``wanted``, or fewer when the file limit is low."""
    if soft_nofile is None:
        soft_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft_nofile == resource.RLIM_INFINITY:
            soft_nofile = NOFILE_TARGET
    return max(8, min(wanted, soft_nofile - BACKLOG - FD_RESERVE))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a cap on open connections.

    Use :func:`guarded_protocol` to get a subclass with its own cap and bookkeeping (one
    per server).
    """

    max_connections: ClassVar[int] = MAX_CONNECTIONS
    header_timeout_s: ClassVar[float] = HEADER_TIMEOUT_S
    #: open connections of this server, oldest first
    open_connections: ClassVar[dict[GuardedH11Protocol, None]] = {}

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timer: asyncio.TimerHandle | None = None

    # -- deadline for the request head ------------------------------------------------------
    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def waiting_for_request(self) -> bool:
        """True while no request is being served: nothing or part of a head received."""
        return self.conn.their_state in (h11.IDLE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR) and (
            self.cycle is None or self.cycle.response_complete)

    # -- the cap on connections -------------------------------------------------------------
    def _make_room(self) -> None:
        """Over the cap: close the oldest connection waiting for a request, else this one."""
        excess = len(self.open_connections) - self.max_connections
        if excess <= 0:
            return
        for other in list(self.open_connections):
            if excess <= 0:
                return
            if other is not self and other.waiting_for_request():
                other._drop()
                excess -= 1
        if excess > 0:
            self._drop()

    def _drop(self) -> None:
        self.open_connections.pop(self, None)
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.close()

    # -- uvicorn's protocol interface -------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection, make room under the cap, start its head deadline."""
        super().connection_made(transport)
        self.open_connections[self] = None
        self._arm_head_timer()
        self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self.open_connections.pop(self, None)
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        """Parse what arrived; a complete request head stops the deadline."""
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        """A response is out: the next request head has ``header_timeout_s`` again."""
        if not self.transport.is_closing():
            self._arm_head_timer()  # before uvicorn handles a pipelined request
        super().on_response_complete()


def guarded_protocol(max_connections: int = MAX_CONNECTIONS,
                     header_timeout_s: float = HEADER_TIMEOUT_S) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with its own cap and connection list."""
    return type("HmiH11Protocol", (GuardedH11Protocol,), {
        "max_connections": max_connections,
        "header_timeout_s": header_timeout_s,
        "open_connections": {},
        "__doc__": GuardedH11Protocol.__doc__,
    })


def server_config(app: ASGIApp, host: str, port: int,
                  max_connections: int = MAX_CONNECTIONS) -> Config:
    """The uvicorn settings of the HMI: timeouts, the connection cap, no access log.

    Call :func:`raise_nofile` first: the cap is sized below the soft file limit.
    """
    cap = connection_cap(max_connections)
    return Config(app, host=host, port=port, log_level="warning", access_log=False,
                  lifespan="off", timeout_graceful_shutdown=2, http=guarded_protocol(cap),
                  ws="none", timeout_keep_alive=KEEP_ALIVE_S, backlog=BACKLOG,
                  limit_concurrency=cap + 1, h11_max_incomplete_event_size=MAX_HEAD_BYTES)
