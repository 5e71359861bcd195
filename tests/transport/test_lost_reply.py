"""A lost XREADGROUP reply must not strand entries (seen in the two-host test, part-8).

The broker delivered entries to this consumer (they are in its pending list), the reply never
arrived (the link went down), the reader retried with ``>`` and got only newer entries: the
delivered ones stayed pending with a live consumer, which nobody claims, and the part they
carried never reached the PLC. A TCP proxy between the reader and a real broker drops exactly
one XREADGROUP reply and closes the connection, as a link going down would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import redis

from procgraph.transport.connect import connect
from procgraph.transport.reader import GroupReader, ReadSpec


class ReplyDropper:
    """Forwards a TCP connection to the broker; when armed, the reply to the next request
    holding ``XREADGROUP`` is dropped and the client's connection closed."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.armed = threading.Event()
        self.dropped = 0
        self.sockets: list[socket.socket] = []  # closed with the proxy
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            doomed = threading.Event()
            threading.Thread(target=self._up, args=(client, upstream, doomed), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, doomed),
                             daemon=True).start()

    def _up(self, src: socket.socket, dst: socket.socket, doomed: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if self.armed.is_set() and b"XREADGROUP" in data.upper():
                    self.armed.clear()
                    doomed.set()
                dst.sendall(data)

    def _down(self, src: socket.socket, dst: socket.socket, doomed: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if doomed.is_set():  # the broker answered; the client never hears it
                    self.dropped += 1
                    dst.close()
                    src.close()
                    return
                dst.sendall(data)

    def close(self) -> None:
        self.server.close()
        for sock in self.sockets:
            sock.close()


def test_entries_of_a_lost_reply_are_read_again(valkey: Any) -> None:
    direct = redis.Redis.from_url(valkey.url)
    stream = "lost:reply:s"
    proxy = ReplyDropper("127.0.0.1", valkey.port)
    try:
        client = connect(f"redis://127.0.0.1:{proxy.port}", socket_timeout=2)
        reader = GroupReader(client, [ReadSpec(stream, "g", "items", "0")], "g-0",
                             threading.Event())
        reader.ensure_groups()
        for n in range(3):
            direct.xadd(stream, {"n": str(n)})
        proxy.armed.set()
        got = reader.read(64, 100)  # its first reply is dropped; the retry must bring them
        assert proxy.dropped == 1
        direct.xadd(stream, {"n": "3"})
        got += reader.read(64, 100)
        numbers = [int(fields[b"n"]) for _, (_, fields) in got]
        assert numbers == [0, 1, 2, 3], numbers  # each once, in order
        # entries handed out before a lost reply are not handed out again
        for s, (entry_id, _) in got:
            reader.ack_later(s, entry_id)
        direct.xadd(stream, {"n": "4"})
        proxy.armed.set()
        again = reader.read(64, 100)
        assert [int(f[b"n"]) for _, (_, f) in again] == [4]
        reader.close()
        client.close()
    finally:
        proxy.close()
