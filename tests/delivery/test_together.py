"""A stateful source's sends held for its next state change, on a real broker: written in the
same transaction as that change, never held for long when no change follows, and only for
outputs on the state's own broker."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import redis
from test_sendbuffer import _entry, _numbers, _writer

from procgraph.delivery.sendbuffer import SendBuffer
from procgraph.state import AgentState
from procgraph.transport.connect import connect


def _line(client: redis.Redis, streams: dict[str, str],
          other: redis.Redis | None = None) -> tuple[SendBuffer, AgentState, threading.Event]:
    stop = threading.Event()
    writers = {port: _writer(other if other is not None and port == "far" else client,
                             stream, stop) for port, stream in streams.items()}
    state = AgentState.for_broker(client, "tg", "src")
    return SendBuffer(writers, stop, state=(state.store, client)), state, stop


def _cursor(client: redis.Redis) -> int | None:
    raw = client.hget("pg:tg:state:src:values", "next")
    return None if raw is None else int(raw)


def test_a_send_and_the_state_change_after_it_are_written_in_one_transaction(valkey: Any):
    client = connect(valkey.url)
    buffer, state, stop = _line(client, {"out": "tg:one"})
    monitor = client.monitor()
    seen: list[str] = []

    def watch() -> None:
        for _ in range(64):
            cmd = monitor.next_command()["command"]
            seen.append(cmd.split()[0].upper())
            if cmd.upper().startswith("EXEC"):
                return

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        start = int(state.get("next", 0))  # a source that reads its cursor: sends are held
        with monitor:
            watcher.start()
            buffer.add("out", _entry(start))
            assert client.xlen("tg:one") == 0, "held until the state change"
            state.put("next", start + 1)
            watcher.join(5)
        assert _numbers(client, "tg:one") == [0] and _cursor(client) == 1
        assert seen[seen.index("MULTI"):] == ["MULTI", "XADD", "HSET", "EXEC"], seen
    finally:
        stop.set()
        buffer.close()


def test_sends_no_state_change_follows_are_written_at_once_from_the_second(valkey: Any):
    client = connect(valkey.url)
    buffer, state, stop = _line(client, {"out": "tg:free"})
    try:
        state.get("next")
        buffer.add("out", _entry(0))
        assert client.xlen("tg:free") == 0
        buffer.add("out", _entry(1))  # again, no state change: the held one goes out
        buffer.add("out", _entry(2))
        buffer._flush_ports()
        assert _numbers(client, "tg:free") == [0, 1, 2]
        state.put("next", 3)  # a state change follows a send again: the next is held
        buffer.add("out", _entry(3))
        assert _numbers(client, "tg:free") == [0, 1, 2]
        buffer.flush()  # flush() writes what is held
        assert _numbers(client, "tg:free") == [0, 1, 2, 3]
    finally:
        stop.set()
        buffer.close()


def test_a_source_that_never_used_its_state_writes_at_once(valkey: Any):
    client = connect(valkey.url)
    buffer, _state, stop = _line(client, {"out": "tg:plain"})
    try:
        buffer.add("out", _entry(0))
        buffer._flush_ports()
        assert _numbers(client, "tg:plain") == [0]
    finally:
        stop.set()
        buffer.close()


def test_an_output_on_another_broker_is_written_at_once(valkey: Any, broker: Any):
    client, far = connect(valkey.url), connect(broker.url)
    buffer, state, stop = _line(client, {"out": "tg:near", "far": "tg:far"}, other=far)
    try:
        state.get("next")
        buffer.add("far", _entry(7))
        buffer._flush_ports()
        assert _numbers(far, "tg:far") == [7]
        buffer.add("out", _entry(8))
        assert client.xlen("tg:near") == 0
        state.put("next", 9)
        assert _numbers(client, "tg:near") == [8]
    finally:
        stop.set()
        buffer.close()


def test_a_held_array_is_a_copy_so_the_sender_may_reuse_its_buffer(valkey: Any):
    client = connect(valkey.url)
    buffer, state, stop = _line(client, {"out": "tg:big"})
    frame = np.full(1 << 20, 1, dtype=np.uint8)
    try:
        state.get("next")
        buffer.add("out", {b"n": b"0", b"px": memoryview(frame)})
        frame[:] = 2  # the camera's next grab into the same buffer
        state.put("next", 1)
        [(_, fields)] = client.xrange("tg:big")
        assert set(fields[b"px"]) == {1}
    finally:
        stop.set()
        buffer.close()


def test_a_held_backlog_is_bounded(valkey: Any):
    client = connect(valkey.url)
    buffer, state, stop = _line(client, {"out": "tg:cap"})
    buffer.held.max_entries = 1  # type: ignore[union-attr]
    try:
        state.get("next")
        buffer.add("out", _entry(0))  # at the cap: written with the state as it is
        assert _numbers(client, "tg:cap") == [0]
    finally:
        stop.set()
        buffer.close()
