"""Messages and agents shared by the tests of the agent API (tests/agent/)."""

from __future__ import annotations

import numpy as np

from procgraph import Agent, Input, Message, Output


class ApiReading(Message):
    value: float
    seq: int = 0


class ApiHotReading(ApiReading):
    alarm: bool = True


class ApiVerdict(Message):
    ok: bool
    source_seq: int = -1


class ApiFrame(Message):
    image: np.ndarray


class Judge(Agent):
    """Sends a verdict per reading; a second output only for alarms."""

    class Params(Agent.Params):
        limit: float = 10.0
        name: str = "judge"

    readings = Input(ApiReading)
    verdicts = Output(ApiVerdict)
    alarms = Output(ApiReading)

    def setup(self) -> None:
        self.events = ["setup"]

    def on_readings(self, msg: ApiReading) -> None:
        self.verdicts.send(ApiVerdict(ok=msg.value <= self.params.limit, source_seq=msg.seq))
        if msg.value > self.params.limit:
            self.alarms.send(ApiHotReading(value=msg.value, seq=msg.seq, key="explicit"))

    def teardown(self) -> None:
        self.events.append("teardown")


class Batcher(Agent):
    readings = Input(ApiReading, batch=3, max_wait_ms=5)
    sums = Output(ApiReading)

    def setup(self) -> None:
        self.sizes: list[int] = []

    def on_readings(self, msgs: list[ApiReading]) -> None:
        self.sizes.append(len(msgs))
        self.sums.send(ApiReading(value=sum(m.value for m in msgs), seq=len(msgs)))


class Ticker(Agent):
    """A source: sends ``count`` readings, then idles until stopped."""

    class Params(Agent.Params):
        count: int = 3

    out = Output(ApiReading)

    def run(self) -> None:
        for n in range(self.params.count):
            self.out.send(ApiReading(value=n, seq=n, key=f"t{n}"))
        while self.sleep(0.01):
            pass
