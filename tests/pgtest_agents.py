"""Agents used by the integration tests; copied beside each test graph like a user's module."""

from __future__ import annotations

import os
import time

import redis

from procgraph import Agent, BrokerUnavailable, Input, Message, Output


def seen(client: redis.Redis, agent: str) -> set[str]:
    """The keys a Recorder agent recorded (for the delivery tests)."""
    return {k.decode() for k in client.smembers(f"pgtest:{agent}:seen")}


def keys(count: int) -> set[str]:
    """The keys of items 0..count-1 as Numbers sends them."""
    return {f"k{n}" for n in range(count)}


class Item(Message):
    """A numbered test item."""

    n: int
    payload: bytes = b""


class Numbers(Agent):
    """Sends ``count`` items numbered 0..count-1 at ``rate_hz`` (0: as fast as possible)."""

    class Params(Agent.Params):
        count: int = 100
        rate_hz: float = 0.0
        payload_bytes: int = 0

    out = Output(Item)

    def run(self) -> None:
        client = self.context.redis()
        start = int(self.state.get("next", 0))
        pad = b"x" * self.params.payload_bytes
        for n in range(start, self.params.count):
            if not self.running:
                return
            self.out.send(Item(n=n, key=f"k{n}", payload=pad))
            self.state.put("next", n + 1)
            self.flush()  # the item first, then the state that says it was sent
            if self.params.rate_hz > 0:
                time.sleep(1.0 / self.params.rate_hz)
        client.set(f"pgtest:{self.context.agent}:done", 1)
        while self.running:
            self.sleep(0.2)


class Recorder(Agent):
    """Records each item it handles in Redis: a set of keys and a per-consumer count.

    ``slow_ms`` slows the handler; items whose key is in ``poison`` always raise;
    ``crash_at`` makes the first replica that sees that item exit hard (like a segfault).
    """

    class Params(Agent.Params):
        slow_ms: float = 0.0
        poison: list[str] = []
        crash_at: int = -1
        crash_always_at: int = -1
        hang_at: int = -1
        slow_at: list[int] = []  # items whose handler call takes slow_at_ms
        slow_at_ms: float = 0.0
        broker_down_at: list[int] = []  # items whose handler first raises BrokerUnavailable
        broker_down_times: int = 0  # ... this many times

    items = Input(Item)

    def setup(self) -> None:
        self.client = self.context.redis()
        self.prefix = f"pgtest:{self.context.agent}"

    def on_items(self, msg: Item) -> None:
        if msg.key in self.params.poison:
            raise ValueError(f"cannot handle {msg.key}")
        if msg.n in self.params.broker_down_at and (
                self.client.incr(f"{self.prefix}:down:{msg.n}") <= self.params.broker_down_times):
            raise BrokerUnavailable(f"pretend the broker is away while handling {msg.key}")
        if msg.n == self.params.crash_at and self.client.setnx(f"{self.prefix}:crashed", 1):
            os._exit(3)
        if msg.n == self.params.crash_always_at:
            os._exit(4)
        if msg.n == self.params.hang_at:
            time.sleep(3600)  # stuck: no progress, so no heartbeat
        if self.params.slow_ms:
            time.sleep(self.params.slow_ms / 1000)
        if msg.n in self.params.slow_at:
            time.sleep(self.params.slow_at_ms / 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(f"{self.prefix}:seen", msg.key)
        pipe.incr(f"{self.prefix}:handled")
        pipe.hincrby(f"{self.prefix}:by", self.context.consumer, 1)
        pipe.execute()


class Relay(Agent):
    """Forwards each item as it is (key kept): a user's worker between a source and a sink."""

    class Params(Agent.Params):
        slow_ms: float = 0.0

    items = Input(Item)
    out = Output(Item)

    def on_items(self, msg: Item) -> None:
        if self.params.slow_ms:
            time.sleep(self.params.slow_ms / 1000)
        self.out.send(Item(n=msg.n, key=msg.key))


class Doubler(Agent):
    """Forwards each item with n doubled (a middle hop)."""

    items = Input(Item)
    out = Output(Item)

    def on_items(self, msg: Item) -> None:
        self.out.send(Item(n=msg.n * 2))


class BatchRecorder(Agent):
    """Records batch sizes it gets (batch declared 4, wait 50 ms)."""

    items = Input(Item, batch=4, max_wait_ms=50)

    def setup(self) -> None:
        self.client = self.context.redis()

    def on_items(self, msgs: list[Item]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush("pgtest:batches", len(msgs))
        for m in msgs:
            pipe.sadd("pgtest:batch:seen", m.key)
        pipe.execute()
