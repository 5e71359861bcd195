"""Helpers of the Modbus tests: free ports, a writer for a simulated PLC, a TCP proxy that
loses one response, and the checks of what the simulated PLC saw."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from procgraph.agents.modbus.client import PlcWriter
from procgraph.agents.modbus.sim import SimulatedPlc

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll ``cond`` until true or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def writer_for(plc: SimulatedPlc, port: int | None = None) -> PlcWriter:
    """A connected writer for ``plc`` (optionally through another port, e.g. a proxy)."""
    w = PlcWriter.tcp(HOST, port or plc.port, plc.regmap, request_timeout_s=1.0)
    w.connect()
    return w


def keys_of(parts: list[dict[str, Any]]) -> list[str]:
    return [p["key"] for p in parts]


def assert_clean(plc: SimulatedPlc) -> None:
    """No duplicates, gaps, handshake violations or invalid data seen by the PLC."""
    s = plc.summary()
    assert s["duplicates"] == {}, s
    assert s["gaps"] == [], s
    assert s["violations"] == [], s
    assert s["invalid"] == [], s


# --------------------------------------------------------------------------- proxy
class DroppingProxy:
    """TCP proxy in front of a Modbus TCP server that can lose one response.

    ``drop_response_to = fc`` makes it forward the next request with that function code to
    the server (so the write happens) and then cut the connection instead of forwarding the
    response: the "write went through but the ack was lost" case. ``requests`` lists the
    function codes of every request forwarded.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.drop_response_to: int | None = None
        self.dropped: list[int] = []
        self.requests: list[int] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    @staticmethod
    def _read_frame(sock: socket.socket) -> bytes | None:
        buf = b""
        need = 7  # MBAP header: transaction, protocol, length, unit
        while len(buf) < need:
            try:
                chunk = sock.recv(need - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
            if len(buf) == 7 and need == 7:
                need = 6 + struct.unpack(">H", buf[4:6])[0]
        return buf

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((HOST, self.upstream_port))
            with self._lock:
                self._socks += [client, upstream]
            for src, dst, is_request in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, is_request), daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, is_request: bool) -> None:
        while (frame := self._read_frame(src)) is not None:
            fc = frame[7]
            with self._lock:
                if is_request:
                    self.requests.append(fc)
                drop = not is_request and self.drop_response_to == fc
                if drop:
                    self.drop_response_to = None
                    self.dropped.append(fc)
            if drop:
                break
            try:
                dst.sendall(frame)
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._accept_thread.join(2)
        for t in self._threads:
            t.join(2)
