"""ReadAhead on a real broker: reads in the caller's thread when idle, one chunk ahead while
busy, never two reads at once, every entry once and in order."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from procgraph.runtime.readahead import ReadAhead
from procgraph.transport.connect import connect
from procgraph.transport.reader import GroupReader, ReadSpec


def _reader(url: str, stop: threading.Event) -> GroupReader:
    reader = GroupReader(connect(url), [ReadSpec("ra:s", "g", "in", "0")], "g-0", stop)
    reader.ensure_groups()
    return reader


def test_entries_come_once_and_in_order_across_direct_and_ahead_reads(valkey: Any) -> None:
    admin = redis.Redis.from_url(valkey.url)
    stop = threading.Event()
    reader = _reader(valkey.url, stop)
    ahead = ReadAhead(reader, 16, stop)
    got: list[int] = []

    def produce() -> None:
        for n in range(600):
            admin.xadd("ra:s", {b"n": str(n).encode()})
            if n % 50 == 49:
                time.sleep(0.02)  # bursts and gaps: both kinds of read happen

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        deadline = time.monotonic() + 20
        while len(got) < 600 and time.monotonic() < deadline:
            chunk = ahead.read(50)
            if chunk:
                ahead.start()  # the next chunk is read while this one is "handled"
            for stream, (entry_id, fields) in chunk:
                got.append(int(fields[b"n"]))
                reader.ack_later(stream, entry_id)
        assert got == list(range(600))
        reader.flush_acks()
        assert admin.xpending("ra:s", "g")["pending"] == 0
    finally:
        ahead.close()
        producer.join(5)


def test_a_blocking_read_in_the_callers_thread_gets_a_later_entry(valkey: Any) -> None:
    admin = redis.Redis.from_url(valkey.url)
    stop = threading.Event()
    reader = _reader(valkey.url, stop)
    ahead = ReadAhead(reader, 16, stop)
    try:
        assert ahead.read(10) == []  # nothing there: waited 10 ms
        timer = threading.Timer(0.2, lambda: admin.xadd("ra:s", {b"n": b"1"}))
        timer.start()
        chunk = ahead.read(5000)
        assert [f[b"n"] for _, (_, f) in chunk] == [b"1"]
        ahead.start()
        assert ahead.take() == []  # the read ahead does not block for new entries
    finally:
        ahead.close()
