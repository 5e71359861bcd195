"""A frame source that renders synthetic parts, one per grab, numbered from a start value."""

from __future__ import annotations

import time

import numpy as np
from procgraph.agents.camera.sources import FrameSource, Grab
from procgraph.agents.camera.synthetic.render import render_view
from procgraph.agents.camera.synthetic.spec import make_part

__all__ = ["SyntheticPartSource"]


class SyntheticPartSource(FrameSource):
    """Renders one side of part ``next_part``, ``next_part + 1``... on each :meth:`grab`.

    Part ``n`` depends only on ``seed`` and ``n``: two sources with the same seed (a front and
    a back camera) agree on every part. The ground truth is in ``Grab.meta["truth"]`` (``"ok"``
    or the defect kind) and the part number in ``Grab.meta["part"]``. Reopening keeps the count.

    Args:
        view: ``"front"`` or ``"back"``.
        seed: seed of the line; parts are reproducible from it.
        defect_rate: probability that a part is defective (on one side or both).
        size: image size as (height, width).
        channels: 1 for ``Mono8`` images, 3 for ``BGR8``.
        dust, lighting: add harmless nuisances (see ``render_view``).
        next_part: number of the first part to render.
    """

    def __init__(
        self,
        view: str = "front",
        *,
        seed: int = 1,
        defect_rate: float = 0.2,
        size: tuple[int, int] = (256, 256),
        channels: int = 1,
        dust: bool = True,
        lighting: bool = True,
        next_part: int = 0,
    ) -> None:
        self.view, self.seed, self.defect_rate = view, seed, defect_rate
        self.size, self.channels, self.dust, self.lighting = size, channels, dust, lighting
        self.next_part = next_part
        self._open = False

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._open

    @property
    def pixel_format(self) -> str:
        """``Mono8`` or ``BGR8``."""
        return "Mono8" if self.channels == 1 else "BGR8"

    def open(self) -> None:
        """Nothing to open."""
        self._open = True

    def close(self) -> None:
        """Nothing to release."""
        self._open = False

    def grab(self, timeout_s: float = 0.0) -> Grab:
        """Render the next part's view."""
        n = self.next_part
        spec = make_part(n, np.random.default_rng([self.seed, n]), self.defect_rate)
        image = render_view(spec, self.view, self.size, self.channels, self.dust, self.lighting)
        self.next_part = n + 1
        return Grab(image=image, pixel_format=self.pixel_format, timestamp_ns=time.time_ns(),
                    frame_id=n, meta={"truth": spec.defect(self.view) or "ok", "part": n})
