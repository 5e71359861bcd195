"""What a synthetic part is: its defects per side, and how a new one is drawn at random."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DEFECT_KINDS", "VIEWS", "PartSpec", "make_part"]

DEFECT_KINDS = ("scratch", "dent", "chip")
"""The defect kinds :func:`render_view` can draw."""

VIEWS = ("front", "back")
"""The sides of a part that :func:`render_view` can draw."""

@dataclass(frozen=True)
class PartSpec:
    """What one physical part looks like.

    Attributes:
        part_id: identifier of the part on the line (also a good message key).
        defect_front: defect kind on the front side (one of :data:`DEFECT_KINDS`) or None.
        defect_back: defect kind on the back side (one of :data:`DEFECT_KINDS`) or None.
        seed: seed of everything random about the part's pictures (pose, dust, lighting...).
    """

    part_id: int
    defect_front: str | None
    defect_back: str | None
    seed: int

    def __post_init__(self) -> None:
        """Reject unknown defect kinds early, with a clear message."""
        for side in (self.defect_front, self.defect_back):
            if side is not None and side not in DEFECT_KINDS:
                raise ValueError(f"unknown defect kind {side!r}; expected one of {DEFECT_KINDS}")

    @property
    def defective(self) -> bool:
        """True if either side carries a defect."""
        return self.defect_front is not None or self.defect_back is not None

    def defect(self, view: str) -> str | None:
        """Return the defect kind on ``view`` ("front" or "back"), or None."""
        if view == "front":
            return self.defect_front
        if view == "back":
            return self.defect_back
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")


def make_part(part_id: int, rng: np.random.Generator, defect_rate: float) -> PartSpec:
    """Decide what a new part looks like.

    With probability ``defect_rate`` the part is defective; a defective part has a defect on
    the front, on the back or on both (each with probability 1/3), each of a random kind.
    The same number of random draws is taken whatever the outcome, so the sequence of seeds
    produced by ``rng`` does not depend on ``defect_rate``.

    Args:
        part_id: identifier stored in the spec.
        rng: source of randomness (for reproducible lines, seed it).
        defect_rate: probability in [0, 1] that the part is defective.

    Returns:
        The part's :class:`PartSpec`.
    """
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must be in [0, 1], got {defect_rate}")
    seed = int(rng.integers(0, 2**32))
    defective = bool(rng.random() < defect_rate)
    sides = int(rng.integers(0, 3))  # 0: front, 1: back, 2: both
    kind_front, kind_back = (DEFECT_KINDS[int(i)] for i in rng.integers(0, len(DEFECT_KINDS), 2))
    front = kind_front if defective and sides in (0, 2) else None
    back = kind_back if defective and sides in (1, 2) else None
    return PartSpec(part_id=part_id, defect_front=front, defect_back=back, seed=seed)
