"""Sizes checked before sending: an entry the broker or the stream cannot take raises
MessageTooLarge in send() (a source sees it; a handler's input is retried, then
dead-lettered) and is never resent."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import redis

from pgtest_util import wait_for
from procgraph import Message
from procgraph.constants import dead_letter_key
from procgraph.delivery.sendbuffer import SendBuffer
from procgraph.errors import MessageTooLarge
from procgraph.runtime.outbox import Outbox
from procgraph.transport.writer import StreamWriter, WriterConfig


class BigFrame(Message):
    image: np.ndarray


def _outbox(url: str, stop: threading.Event, max_bytes: int = 512 * 2**20) -> Outbox:
    writer = StreamWriter(redis.Redis.from_url(url), WriterConfig("pg:lim:cam:out", 10,
                                                                  max_bytes), stop)
    return Outbox({"out": writer}, {"out": {}})


def _deliver_bounded(box: Outbox, msg: Message, stop: threading.Event) -> BaseException | None:
    """deliver() in a thread; a send that retries forever is stopped after 15 s."""
    got: list[BaseException] = []

    def go() -> None:
        try:
            box.deliver("out", msg)
        except BaseException as exc:  # handed to the test
            got.append(exc)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(15)
    if t.is_alive():
        stop.set()
        t.join(10)
        pytest.fail("send() was still resending after 15 s")
    return got[0] if got else None


def test_item05_600mib_array_is_refused_not_resent(broker) -> None:
    """Issue 9 item 5: a 600 MiB array (over proto-max-bulk-len, 512 MiB) raises
    MessageTooLarge at once, naming the limit; nothing is sent or resent."""
    stop = threading.Event()
    box = _outbox(broker.url, stop, max_bytes=2**40)
    image = np.zeros(600 * 2**20, np.uint8)  # calloc: no page is touched
    t0 = time.monotonic()
    exc = _deliver_bounded(box, BigFrame(image=image), stop)
    assert isinstance(exc, MessageTooLarge), exc
    assert time.monotonic() - t0 < 5
    text = str(exc)
    assert "proto-max-bulk-len of 536870912 bytes" in text and "a:image" in text, text
    assert "output 'out'" in text and "pg:lim:cam:out" in text
    assert redis.Redis.from_url(broker.url).xlen("pg:lim:cam:out") == 0


def test_lowered_broker_limit_is_read_from_the_broker() -> None:
    from procgraph.brokers import EmbeddedBroker

    with EmbeddedBroker() as b:
        client = redis.Redis.from_url(b.url)
        client.config_set("proto-max-bulk-len", 1024 * 1024)
        stop = threading.Event()
        box = _outbox(b.url, stop)
        with pytest.raises(MessageTooLarge, match="proto-max-bulk-len of 1048576"):
            box.deliver("out", BigFrame(image=np.zeros(2 * 2**20, np.uint8)))
        box.deliver("out", BigFrame(image=np.zeros(1000, np.uint8)))  # small ones still go
        assert client.xlen("pg:lim:cam:out") == 1


def test_source_send_raises_before_the_buffer(valkey) -> None:
    stop = threading.Event()
    box = _outbox(valkey.url, stop, max_bytes=2**20)
    box.buffer = SendBuffer(box.writers, stop)
    try:
        with pytest.raises(MessageTooLarge, match="over the stream's cap of 1048576 bytes"):
            box.deliver("out", BigFrame(image=np.zeros(2**20, np.uint8)))
        box.buffer.flush()
        assert redis.Redis.from_url(valkey.url).xlen("pg:lim:cam:out") == 0
    finally:
        stop.set()
        box.buffer.close()


AGENT = '''
import numpy as np
from procgraph import Agent, Input, Message, Output
from pgtest_agents import Item


class Blob(Message):
    """A message with an array."""

    data: np.ndarray


class Blower(Agent):
    """Sends a 2 MiB array for item 3, a small one for the rest."""

    items = Input(Item)
    out = Output(Blob, max_mb=1)

    def on_items(self, msg: Item) -> None:
        size = 2 * 2**20 if msg.n == 3 else 16
        self.out.send(Blob(data=np.zeros(size, np.uint8), key=msg.key))
'''


def test_handler_send_too_large_is_retried_then_dead_lettered(broker, run_graph,
                                                              tmp_path) -> None:
    client = redis.Redis.from_url(broker.url)
    (tmp_path / "pgtest_blow.py").write_text(AGENT)
    graph = """
name: blow
brokers: {main: {url: embedded}}
agents:
  src: {class: "pgtest_agents:Numbers", params: {count: 10, rate_hz: 50}}
  mid: {class: "pgtest_blow:Blower", inputs: {items: src.out}, max_deliveries: 2}
"""
    with run_graph(graph, redis_url=broker.url) as sup:
        wait_for(lambda: client.xlen("pg:blow:mid:out") == 9, 20, "9 small messages")
        wait_for(lambda: client.xlen(dead_letter_key("pg:blow:src:out")) == 1, 20,
                 "the item whose output is too large dead-lettered")
        assert next(r for r in sup.replicas if r.agent.name == "mid").restarts == 0
    (_, dead), = client.xrange(dead_letter_key("pg:blow:src:out"))
    reason = dead[b"dead:reason"].decode()
    assert "MessageTooLarge" in reason and "over the stream's cap" in reason, reason
    assert b'"key":"k3"' in dead[b"h"]
