"""CameraAgent's loop in-process (procgraph.testing): pacing, reopen, previews, state resume."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from procgraph.agents.camera import CameraAgent, SyntheticPartCamera
from procgraph.agents.camera.sources import FrameSource, Grab, SourceError
from procgraph.agents.messages import Frame, Preview

from pgtest_util import wait_for
from procgraph.testing import AgentHarness


class ScriptedSource(FrameSource):
    """Fails to open ``open_failures`` times, and fails one grab at each of ``grab_failures``."""

    def __init__(self, image: np.ndarray, fmt: str, open_failures: int = 0,
                 grab_failures: tuple[int, ...] = ()) -> None:
        self.image, self.fmt = image, fmt
        self.open_failures, self.grab_failures = open_failures, set(grab_failures)
        self.opens = self.closes = self.grabs = 0
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        self.opens += 1
        if self.open_failures:
            self.open_failures -= 1
            raise SourceError("cable unplugged")
        self._open = True

    def grab(self, timeout_s: float = 1.0) -> Grab | None:
        self.grabs += 1
        if self.grabs in self.grab_failures:
            self._open = False
            raise SourceError("lost the camera")
        return Grab(self.image, self.fmt, time.time_ns(), self.grabs)

    def close(self) -> None:
        self.closes += 1
        self._open = False


class ScriptedCamera(CameraAgent):
    source: ScriptedSource  # set by the test before the agent runs

    def make_source(self) -> FrameSource:
        return self.source






def _frames(h: AgentHarness) -> list[Any]:
    return h.sent["frames"]


def test_reopens_after_open_and_grab_failures() -> None:
    ScriptedCamera.source = ScriptedSource(np.zeros((4, 6), np.uint8), "Mono8", open_failures=1,
                                           grab_failures=(3, 5))
    h = AgentHarness(ScriptedCamera, {"count": 6, "preview_width": 0})
    t0 = time.monotonic()
    with h.running():
        wait_for(lambda: len(_frames(h)) == 6)
        assert time.monotonic() - t0 >= 0.45  # one backoff of 0.5 s after the failed open
    src = ScriptedCamera.source
    frames: list[Frame] = _frames(h)
    assert [f.seq for f in frames] == list(range(6))  # the failures cost no sequence numbers
    assert [f.key for f in frames] == [f"scriptedcamera-{i}" for i in range(6)]
    assert src.opens == 4 and src.grabs == 8  # 1 failed open + first + 2 reopens
    assert src.closes >= 3  # each reopen closes first; the end of run() closes too
    assert h.sent["preview"] == []


def test_fps_is_paced_by_the_rate_limiter() -> None:
    ScriptedCamera.source = ScriptedSource(np.zeros((4, 6), np.uint8), "Mono8")
    h = AgentHarness(ScriptedCamera, {"fps": 25, "count": 6, "preview_width": 0})
    with h.running():
        t0 = time.monotonic()
        wait_for(lambda: len(_frames(h)) == 6)
        elapsed = time.monotonic() - t0
    assert 0.15 <= elapsed < 2.0  # 5 periods of 40 ms, not as fast as the source


def test_previews_follow_the_pixel_format() -> None:
    mono12 = np.full((60, 80), 2048, np.uint16)
    ScriptedCamera.source = ScriptedSource(mono12, "Mono12")
    h = AgentHarness(ScriptedCamera, {"count": 1, "preview_width": 40})
    with h.running():
        wait_for(lambda: len(h.sent["preview"]) == 1)
    (pv,) = h.sent["preview"]
    assert isinstance(pv, Preview) and pv.scale == 0.5
    assert pv.image.shape == (30, 40) and pv.image.dtype == np.uint8
    assert abs(int(pv.image[10, 10]) - 128) <= 2  # 2048 of 4095, not 2048 >> 8 (JPEG: +-2)

    mosaic = np.zeros((60, 80), np.uint8)
    mosaic[0::2, 0::2] = 200  # a red scene under an RGGB filter
    ScriptedCamera.source = ScriptedSource(mosaic, "BayerRG8")
    h = AgentHarness(ScriptedCamera, {"count": 1, "preview_width": 40})
    with h.running():
        wait_for(lambda: len(h.sent["preview"]) == 1)
    b, g, r = (int(v) for v in h.sent["preview"][0].image[15, 20])
    assert r > 150 and g < 40 and b < 40, (b, g, r)


class HookCamera(CameraAgent):
    """The older hook API (open_source / grab / close_source), as benchmarks use it."""

    def open_source(self) -> None:
        self.n = 0

    def grab(self) -> tuple[np.ndarray, str, dict[str, Any]]:
        self.n += 1
        return np.full((4, 4), self.n, np.uint8), "Mono8", {"key": f"k{self.n}", "truth": "ok",
                                                            "capture_ns": 1234}


def test_the_older_hook_api_still_works() -> None:
    h = AgentHarness(HookCamera, {"count": 3, "preview_width": 0})
    with h.running():
        wait_for(lambda: len(_frames(h)) == 3)
    frames = _frames(h)
    assert [f.key for f in frames] == ["k1", "k2", "k3"]
    assert all(f.truth == "ok" and f.capture_ns == 1234 for f in frames)
    assert [int(f.image[0, 0]) for f in frames] == [1, 2, 3]


def test_synthetic_camera_resumes_from_its_state() -> None:
    params = {"rate_hz": 200, "count": 3, "preview_width": 0, "seed": 5}
    first = AgentHarness(SyntheticPartCamera, params)
    with first.running():
        wait_for(lambda: len(_frames(first)) == 3)
    assert first.state.get("next_seq") == 3
    again = AgentHarness(SyntheticPartCamera, {**params, "count": 5}, state=first.state)
    with again.running():
        wait_for(lambda: len(_frames(again)) == 2)
    assert [f.key for f in _frames(first) + _frames(again)] == [f"part-{i}" for i in range(5)]
    # the same part from a camera that never restarted: byte for byte the same image
    fresh = AgentHarness(SyntheticPartCamera, {**params, "count": 5})
    with fresh.running():
        wait_for(lambda: len(_frames(fresh)) == 5)
    assert np.array_equal(_frames(fresh)[4].image, _frames(again)[1].image)
    assert {f.truth for f in _frames(fresh)} <= {"ok", "scratch", "dent", "chip"}


@pytest.mark.parametrize("channels", [1, 3])
def test_synthetic_pixel_formats(channels: int) -> None:
    h = AgentHarness(SyntheticPartCamera, {"rate_hz": 200, "count": 1, "channels": channels,
                                           "size": (64, 48), "preview_width": 24})
    with h.running():
        wait_for(lambda: len(h.sent["preview"]) == 1)
    (frame,) = _frames(h)
    assert frame.pixel_format == ("Mono8" if channels == 1 else "BGR8")
    assert frame.image.shape == ((64, 48) if channels == 1 else (64, 48, 3))
    assert h.sent["preview"][0].image.shape[:2] == (32, 24)
