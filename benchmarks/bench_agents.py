"""Agents used by the benchmarks (imported by the replicas the supervisor starts)."""

from __future__ import annotations

import json
import time

import numpy as np
from procgraph.agents.camera import CameraAgent

from procgraph import Agent, Input, Message, Output


def pace(until: float) -> None:
    """Wait until ``perf_counter()`` reaches ``until``, sleeping (as a real source waits for
    its camera or trigger) and spinning only the last 0.1 ms."""
    left = until - time.perf_counter()
    if left > 0.0002:
        time.sleep(left - 0.0001)
    while time.perf_counter() < until:
        pass


class Blob(Message):
    """A payload of raw bytes."""

    data: np.ndarray


class BlobSource(Agent):
    """Waits for ``<prefix>:go``, then sends ``count`` blobs of ``size`` bytes.

    ``interval_ms`` > 0 paces the sends (latency runs); 0 sends as fast as possible.
    """

    class Params(Agent.Params):
        size: int = 64
        count: int = 1000
        interval_ms: float = 0.0
        prefix: str = "bench"

    out = Output(Blob, maxlen=100_000, max_mb=2048)

    def run(self) -> None:
        client = self.context.redis()
        while self.running and not client.get(f"{self.params.prefix}:go"):
            self.sleep(0.01)
        payload = np.frombuffer(np.random.default_rng(0).bytes(self.params.size), np.uint8)
        next_at = time.perf_counter()
        for _ in range(self.params.count):
            if not self.running:
                return
            if self.params.interval_ms:
                next_at += self.params.interval_ms / 1000
                pace(next_at)
            self.out.send(Blob(data=payload))
        while self.running:
            self.sleep(0.2)


class BlobSink(Agent):
    """Records the one-hop latency of each blob; writes stats when ``count`` arrived."""

    class Params(Agent.Params):
        count: int = 1000
        prefix: str = "bench"

    blobs = Input(Blob)

    def setup(self) -> None:
        self.lat: list[float] = []
        self.first = 0.0
        self.nbytes = 0

    def on_blobs(self, msg: Blob) -> None:
        now = time.time_ns()
        if not self.lat:
            self.first = msg.ts_ns / 1e9
        self.lat.append((now - msg.ts_ns) / 1e6)
        self.nbytes += msg.data.nbytes
        if len(self.lat) == self.params.count:
            result = {"lat_ms": self.lat, "first_send": self.first, "last_recv": now / 1e9,
                      "nbytes": self.nbytes}
            self.context.redis().set(f"{self.params.prefix}:result", json.dumps(result))



class MemoryCamera(CameraAgent):
    """A camera whose sensor is a prepared image: measures the publishing path only."""

    class Params(CameraAgent.Params):
        width: int = 1024
        height: int = 1024

    def open_source(self) -> None:
        """Prepare the image."""
        rng = np.random.default_rng(0)
        self.image = rng.integers(0, 255, (self.params.height, self.params.width), np.uint8)

    def grab(self) -> tuple[np.ndarray, str, dict]:
        """Return it at once."""
        return self.image, "Mono8", {}
