"""The frame source contract: RateLimiter, reopen, and the pixel-format helper it re-exports."""

from __future__ import annotations

import time

import pytest
from procgraph.agents import imaging
from procgraph.agents.camera import sources
from procgraph.agents.camera.sources import RateLimiter

# --------------------------------------------------------------------------------------------
# RateLimiter


def test_rate_limiter_caps_a_loop() -> None:
    limiter = RateLimiter(20)
    count = 0
    start = time.monotonic()
    while time.monotonic() - start < 0.5:
        limiter.wait()
        count += 1
    # 0.5 s at 20/s is ~10-11 iterations; an unlimited loop would do thousands
    assert 6 <= count <= 14


def test_rate_limiter_does_not_drift() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s + 0.003  # every sleep oversleeps by 3 ms

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(101):
        limiter.wait()
    # 100 periods of 0.1 s after the first slot: oversleeping does not accumulate
    assert now[0] == pytest.approx(10.0, abs=0.01)

    # a loop that falls far behind restarts its schedule instead of bursting
    now[0] += 5.0
    slept.clear()
    limiter.wait()
    limiter.wait()
    assert slept and slept[-1] == pytest.approx(0.1, abs=0.01)

    free = RateLimiter(None)
    assert free.wait() == 0.0 and free.period_s == 0.0
    with pytest.raises(ValueError):
        RateLimiter(-1)


def test_to_bgr8_is_the_imaging_one() -> None:
    # pixel formats are converted in one place (tests/agents/imaging); the old name stays
    assert sources.to_bgr8 is imaging.to_bgr8
