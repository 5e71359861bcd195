"""A source's SendBuffer on a real broker: order kept, nothing waits for company, flush()
means written, a backlog is coalesced and bounded, errors and lost connections handled."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from pgtest_util import wait_for
from procgraph.delivery.sendbuffer import SendBuffer
from procgraph.transport.connect import connect
from procgraph.transport.writer import Fields, StreamWriter, WriterConfig


def _writer(client: redis.Redis, stream: str, stop: threading.Event) -> StreamWriter:
    return StreamWriter(client, WriterConfig(stream, 100_000, 512 * 2**20), stop)


def _entry(n: int) -> Fields:
    return {b"n": str(n).encode()}


def _numbers(client: redis.Redis, stream: str) -> list[int]:
    return [int(f[b"n"]) for _, f in client.xrange(stream)]


def test_order_is_kept_per_port_and_flush_means_written(valkey: Any) -> None:
    client = connect(valkey.url)
    stop = threading.Event()
    writers = {"a": _writer(client, "sb:a", stop), "b": _writer(client, "sb:b", stop)}
    buffer = SendBuffer(writers, stop)
    try:
        for n in range(3000):
            buffer.add("a" if n % 3 else "b", _entry(n))
        buffer.flush()  # returns once everything is in the broker: counted right after
        assert _numbers(client, "sb:a") == [n for n in range(3000) if n % 3]
        assert _numbers(client, "sb:b") == [n for n in range(3000) if not n % 3]
    finally:
        stop.set()
        buffer.close()


def test_a_lone_send_is_written_at_once(valkey: Any) -> None:
    """No linger: the entry is in the stream while the source waits on something else."""
    client = connect(valkey.url)
    stop = threading.Event()
    buffer = SendBuffer({"a": _writer(client, "sb:lone", stop)}, stop)
    try:
        buffer.add("a", _entry(1))
        wait_for(lambda: client.xlen("sb:lone") == 1, 5, "the lone entry without a flush")
    finally:
        stop.set()
        buffer.close()


class _Gated(StreamWriter):
    """A writer whose first write from the reply thread (a backlog) waits for a gate (a
    full lossless stream, say)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.hold = threading.Event()
        self.calls = 0

    def prepare(self, batch: list[Fields], checked: bool = False) -> None:
        if threading.current_thread().name.startswith("send-"):
            self.calls += 1
            if self.calls == 1:
                self.hold.wait(10)
        super().prepare(batch, checked)


def test_a_backlog_is_coalesced_bounded_and_kept_in_order(valkey: Any) -> None:
    client = connect(valkey.url)
    stop = threading.Event()
    writer = _Gated(client, WriterConfig("sb:gated", 100_000, 512 * 2**20), stop)
    batches: list[int] = []
    writer.on_sent = lambda entries, ids: batches.append(len(ids))
    buffer = SendBuffer({"a": writer}, stop)
    buffer.MAX_ENTRIES = 50
    sent: list[int] = []

    def source() -> None:
        for n in range(121):
            buffer.add("a", _entry(n))
            sent.append(n)

    try:
        thread = threading.Thread(target=source, daemon=True)
        thread.start()
        # the first write of a backlog waits at the gate while the queue fills behind it up
        # to MAX_ENTRIES, and then send() blocks
        wait_for(lambda: writer.calls == 1 and len(buffer._ports["a"].queue) == 50, 5,
                 "the queue to fill")
        time.sleep(0.3)
        assert len(sent) < 121, "send() must block while the queue is full"
        held = len(sent)
        writer.hold.set()
        thread.join(10)
        buffer.flush()
        assert _numbers(client, "sb:gated") == list(range(121))
        assert batches[0] == 1 and max(batches) > 1, batches
        assert held <= 1 + 50 + 50 + 1, held
    finally:
        stop.set()
        buffer.close()


def test_an_entry_the_broker_refuses_reaches_the_source_and_the_rest_go_on(
        valkey: Any) -> None:
    client = connect(valkey.url)
    client.set("sb:notastream", "x")  # XADD to it: WRONGTYPE
    stop = threading.Event()
    buffer = SendBuffer({"bad": _writer(client, "sb:notastream", stop),
                         "good": _writer(client, "sb:good", stop)}, stop)
    try:
        buffer.add("bad", _entry(1))
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            buffer.flush()
        buffer.flush()  # said once; the buffer goes on
        for n in range(10):
            buffer.add("good", _entry(n))
        buffer.flush()
        assert _numbers(client, "sb:good") == list(range(10))
    finally:
        stop.set()
        buffer.close()


def test_a_connection_killed_mid_stream_loses_nothing(valkey: Any) -> None:
    """The port's connection is killed by the broker between writes: every entry still
    arrives, in order (a write whose reply was lost may be doubled, never dropped)."""
    client = connect(valkey.url)
    admin = redis.Redis.from_url(valkey.url)
    stop = threading.Event()
    buffer = SendBuffer({"a": _writer(client, "sb:killed", stop)}, stop)
    try:
        for n in range(2000):
            buffer.add("a", _entry(n))
            if n in (500, 1200):
                admin.client_kill_filter(_type="normal", skipme=True)
        buffer.flush()
        got = _numbers(client, "sb:killed")
        assert sorted(set(got)) == list(range(2000)), "an entry was lost"
        firsts = sorted({n: i for i, n in reversed(list(enumerate(got)))}.items(),
                        key=lambda kv: kv[1])
        assert [n for n, _ in firsts] == list(range(2000)), "out of order"
        assert len(got) - 2000 <= 2 * SendBuffer.MAX_ENTRIES
    finally:
        stop.set()
        buffer.close()


def test_a_connection_closed_while_idle_is_dropped_and_the_next_send_goes_once(
        valkey: Any) -> None:
    """The broker closes the port's connection while nothing is in flight (a CLIENT KILL, a
    broker timeout): the reply thread, which waits on that socket, drops it without spinning,
    and what is sent next goes out on a new connection, each entry once."""
    client = connect(valkey.url)
    admin = redis.Redis.from_url(valkey.url)
    stop = threading.Event()
    buffer = SendBuffer({"a": _writer(client, "sb:idle", stop)}, stop)
    try:
        buffer.add("a", _entry(0))
        buffer.flush()
        port = buffer._ports["a"]
        assert port.conn._sock is not None
        admin.client_kill_filter(_type="normal", skipme=True)
        wait_for(lambda: port.conn._sock is None, 5, "the closed idle connection dropped")
        cpu = time.process_time()
        time.sleep(0.5)
        assert time.process_time() - cpu < 0.25, "the reply thread spins on a closed socket"
        for n in range(1, 101):
            buffer.add("a", _entry(n))
        buffer.flush()
        assert _numbers(client, "sb:idle") == list(range(101))
    finally:
        stop.set()
        buffer.close()


@pytest.mark.parametrize("size", [1000, 200_000])
def test_a_sender_may_reuse_its_array_right_after_send(valkey: Any, size: int) -> None:
    """Entries view the sender's array (no copy); what reaches the broker is what it held
    at send(), even when the sender overwrites it at once (a camera's reused buffer)."""
    import numpy as np

    client = connect(valkey.url)
    stop = threading.Event()
    buffer = SendBuffer({"a": _writer(client, "sb:reuse", stop)}, stop)
    frame = np.zeros(size, np.uint8)
    try:
        for n in range(60):
            frame[:] = n
            buffer.add("a", {b"n": str(n).encode(), b"d": memoryview(frame)})
        buffer.flush()
        got = client.xrange("sb:reuse")
        assert [int(f[b"n"]) for _, f in got] == list(range(60))
        assert all(f[b"d"] == bytes([int(f[b"n"])]) * size for _, f in got), "a view changed"
    finally:
        stop.set()
        buffer.close()
