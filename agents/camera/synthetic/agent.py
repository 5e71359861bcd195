"""The synthetic part camera: a camera agent over :class:`SyntheticPartSource`."""

from __future__ import annotations

from typing import Any, Literal

from procgraph.agents.camera.agent import CameraAgent
from procgraph.agents.camera.sources import FrameSource, Grab
from procgraph.agents.camera.synthetic.source import SyntheticPartSource
from pydantic import Field

__all__ = ["SyntheticPartCamera"]


class SyntheticPartCamera(CameraAgent):
    """Renders machined parts (front or back view) with known defects, dust and lighting.

    Cameras with the same ``seed`` agree on every part, so front and back views of one
    part share a key (``part-<n>``). The ground truth travels in ``Frame.truth``. The number
    of the next part is kept in the agent's state (``next_seq``), so a restarted camera goes
    on where it stopped and no part key is produced twice.
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
        """Remember progress; the runtime writes it after the frame is surely in the broker."""
        self.state.put("next_seq", seq + 1)
