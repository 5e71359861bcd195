"""Tiny agents for the minimal graph, the tutorial and the tests."""

from __future__ import annotations

import time

from procgraph import Agent, Input, Message, Output


class Reading(Message):
    """A numbered measurement."""

    value: float
    seq: int = 0


class Counter(Agent):
    """Emits Reading(value=n) at ``rate_hz``; stops after ``count`` if count > 0."""

    class Params(Agent.Params):
        rate_hz: float = 10.0
        count: int = 0

    out = Output(Reading)

    def run(self) -> None:
        period = 1.0 / self.params.rate_hz if self.params.rate_hz > 0 else 0.0
        n = 0
        next_at = time.monotonic()
        while self.running and (self.params.count <= 0 or n < self.params.count):
            self.out.send(Reading(value=float(n), seq=n, key=f"n{n}"))
            n += 1
            next_at += period
            self.sleep(next_at - time.monotonic())
        while self.running:  # a finished source idles until stopped
            self.sleep(0.5)


class Scale(Agent):
    """Multiplies each reading by ``factor``."""

    class Params(Agent.Params):
        factor: float = 2.0

    readings = Input(Reading)
    scaled = Output(Reading)

    def on_readings(self, msg: Reading) -> None:
        self.scaled.send(Reading(value=msg.value * self.params.factor, seq=msg.seq))


class Printer(Agent):
    """Logs every ``every``-th item it receives."""

    class Params(Agent.Params):
        every: int = 10

    items = Input(Reading)

    def setup(self) -> None:
        self.seen = 0

    def on_items(self, msg: Reading) -> None:
        self.seen += 1
        if self.seen % self.params.every == 0:
            self.log.info("got %d items; last key=%s value=%g", self.seen, msg.key, msg.value)
