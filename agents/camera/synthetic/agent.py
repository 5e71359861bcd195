"""The synthetic part cameras: free-running (:class:`SyntheticPartCamera`, a source) and
triggered (:class:`SyntheticTriggeredCamera`, one frame per ``Trigger``)."""

from __future__ import annotations

import time
from typing import Any, Literal

from procgraph.agents.camera.agent import CameraAgent
from procgraph.agents.camera.sources import FrameSource, Grab
from procgraph.agents.camera.synthetic.source import SyntheticPartSource
from procgraph.agents.messages import Frame, Trigger
from pydantic import Field

from procgraph import Input

__all__ = ["SyntheticPartCamera", "SyntheticTriggeredCamera"]


class SyntheticPartCamera(CameraAgent):
    """Renders machined parts (front or back view) with known defects, dust and lighting.

    Free-running: a source that renders ``rate_hz`` parts a second. Cameras with the same
    ``seed`` agree on every part, so front and back views of one part share a key
    (``part-<n>``) as long as both cameras keep the same pace; a camera that stalls or
    restarts falls behind the other for good (use :class:`SyntheticTriggeredCamera` on a
    :class:`~procgraph.agents.trigger.PartTrigger` for a line that lines up by itself). The
    ground truth travels in ``Frame.truth``. The number of the next part is kept in the
    agent's state (``next_seq``), so a restarted camera goes on where it stopped and no part
    key is produced twice.
    """

    class Params(CameraAgent.Params):
        view: Literal["front", "back"] = "front"
        rate_hz: float = Field(5.0, gt=0, description="parts per second")
        defect_rate: float = Field(0.2, ge=0, le=1)
        seed: int = 1
        size: tuple[int, int] = (256, 256)
        channels: Literal[1, 3] = 1
        dust: bool = True
        lighting: bool = True
        key_format: str = "part-{seq}"

    params: Params

    def setup(self) -> None:
        """Pace at ``rate_hz``."""
        self.params.fps = self.params.rate_hz

    def first_seq(self) -> int:
        """Resume after a restart from the state."""
        return int(self.state.get("next_seq", 0))

    def make_source(self) -> FrameSource:
        """A :class:`SyntheticPartSource` starting at the first sequence number."""
        p = self.params
        return SyntheticPartSource(
            p.view, seed=p.seed, defect_rate=p.defect_rate, size=(p.size[0], p.size[1]),
            channels=p.channels, dust=p.dust, lighting=p.lighting, next_part=self.first_seq(),
        )

    def frame_fields(self, grab: Grab) -> dict[str, Any]:
        """The ground truth of the part."""
        return {"truth": grab.meta["truth"]}

    def sent_seq(self, seq: int) -> None:
        """Remember progress; the runtime writes it with the frame, in one transaction."""
        self.state.put("next_seq", seq + 1)


class SyntheticTriggeredCamera(SyntheticPartCamera):
    """A synthetic part camera that captures one frame per trigger, as on a real machine
    where one photo-eye triggers every camera.

    Each :class:`~procgraph.agents.messages.Trigger` on ``trigger`` gives one frame of part
    ``trigger.seq`` with the trigger's key and seq, so every view of a part shares the key by
    construction. A trigger older than ``max_trigger_age_ms`` when the camera gets to it (the
    camera was stalled, or restarting) is skipped: that part has passed the camera, and the
    join gives it the fail-safe outcome; the parts triggered after the camera is back join
    normally. ``rate_hz``, ``count`` and ``key_format`` are the trigger's business here (not
    used); the camera keeps no state of its own.
    """

    class Params(SyntheticPartCamera.Params):
        max_trigger_age_ms: float = Field(
            2000.0, gt=0, description="skip a trigger older than this when the camera gets "
            "to it (the part has passed the camera)")

    params: Params

    trigger = Input(Trigger, doc="one capture per trigger (from a PartTrigger)")

    def setup(self) -> None:
        """Open the renderer."""
        self.source = self.make_source()
        self.source.open()
        self.last_preview = 0.0
        self.skipped = 0
        self.last_skip_log = 0.0

    def first_seq(self) -> int:
        """The trigger numbers the parts."""
        return 0

    def teardown(self) -> None:
        """Close the renderer; say how many triggers were skipped."""
        source = getattr(self, "source", None)
        if source is not None:
            source.close()
        if getattr(self, "skipped", 0):
            self.log.warning("camera %s skipped %d stale triggers in all", self.camera_id(),
                             self.skipped)

    def on_trigger(self, t: Trigger) -> None:
        """Capture part ``t.seq`` (unless the trigger is stale) and publish it."""
        age_ms = (time.time_ns() - t.trigger_ns) / 1e6
        if age_ms > self.params.max_trigger_age_ms:
            self.skipped += 1
            now = time.monotonic()
            if now - self.last_skip_log >= 1.0:
                self.last_skip_log = now
                self.log.warning("camera %s: trigger %s is %.0f ms old: part gone, not "
                                 "captured (%d skipped so far)", self.camera_id(), t.key,
                                 age_ms, self.skipped)
            return
        assert isinstance(self.source, SyntheticPartSource)
        self.source.next_part = t.seq
        grab = self.source.grab()
        frame = Frame(key=t.key, camera=self.camera_id(), seq=t.seq,
                      capture_ns=grab.timestamp_ns, image=grab.image,
                      pixel_format=grab.pixel_format, **self.frame_fields(grab))
        self.frames.send(frame)
        now = time.monotonic()
        p = self.params
        if p.preview_width and now - self.last_preview >= 1.0 / p.preview_fps:
            self.last_preview = now
            self.send_preview(frame)
