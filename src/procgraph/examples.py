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
        """``rate_hz``: readings per second; ``count``: stop after this many (0: never)."""

        rate_hz: float = 10.0
        count: int = 0

    params: Params
    out = Output(Reading)

    def run(self) -> None:
        """Send readings at the configured rate until stopped."""
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
        """``factor``: what each value is multiplied by."""

        factor: float = 2.0

    params: Params
    readings = Input(Reading)
    scaled = Output(Reading)

    def on_readings(self, msg: Reading) -> None:
        """Send the reading scaled."""
        self.scaled.send(Reading(value=msg.value * self.params.factor, seq=msg.seq))


class Printer(Agent):
    """Logs every ``every``-th item it receives."""

    class Params(Agent.Params):
        """``every``: log one item in this many."""

        every: int = 10

    params: Params
    items = Input(Reading)

    def setup(self) -> None:
        """Start counting."""
        self.seen = 0

    def on_items(self, msg: Reading) -> None:
        """Count the item; log every ``every``-th."""
        self.seen += 1
        if self.seen % self.params.every == 0:
            self.log.info("got %d items; last key=%s value=%g", self.seen, msg.key, msg.value)
