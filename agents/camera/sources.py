"""Common contract for frame-acquisition back-ends.

A back-end is a plain Python object (no procgraph agent SDK involved) that follows
:class:`FrameSource`: ``open()``, then ``grab(timeout_s)`` as often as wanted, then ``close()``;
or use it as a context manager. Each successful grab returns a :class:`Grab`: the image as a
numpy array that the caller owns (never a view into a driver buffer), its pixel format name
and metadata.

Pixel format names follow GenICam PFNC spelling (``Mono8``, ``Mono16``, ``BGR8``, ``RGBa8``,
``BayerRG8``...); sources hand out packed formats unpacked (``Mono12p`` arrives as a uint16
``Mono12`` image). Conversions (to 8-bit BGR, grey, floats, previews) live in
:mod:`procgraph.agents.imaging`; ``to_bgr8`` is re-exported here for older imports.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import numpy as np
from procgraph.agents.imaging import to_bgr8

__all__ = [
    "FrameSource",
    "Grab",
    "RateLimiter",
    "SourceError",
    "to_bgr8",
]


class SourceError(Exception):
    """A frame source cannot be opened, configured or read.

    The message always says what went wrong and what to change (a parameter, a path, a cable).
    """


@dataclass
class Grab:
    """One acquired frame.

    Attributes:
        image: the pixels, owned by the caller. Mono formats are ``(H, W)``; colour formats are
            ``(H, W, 3)`` or ``(H, W, 4)`` in the channel order named by ``pixel_format``.
        pixel_format: PFNC name of the layout of ``image`` (``Mono8``, ``BGR8``, ``RGBa8``...).
        timestamp_ns: host wall-clock time (``time.time_ns()``) when the frame was received.
        frame_id: frame number given by the source; increases from frame to frame (a gap means
            frames were dropped). It restarts when a source is reopened.
        meta: source-specific extras (device timestamp, file path, loop count...).
    """

    image: np.ndarray
    pixel_format: str
    timestamp_ns: int
    frame_id: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])


class FrameSource(abc.ABC):
    """Base class of all frame sources.

    Subclasses implement :meth:`open`, :meth:`grab` and :meth:`close`. ``grab`` returns ``None``
    when no frame arrived within ``timeout_s`` (or a finite source has no more frames, in which
    case :attr:`finished` is ``True``) and raises :class:`SourceError` when the source is broken
    (device gone, stream lost); the caller may then call :meth:`reopen`, with a backoff.
    """

    #: True once a finite source (a file, a folder without ``loop``) has delivered everything.
    finished: bool = False

    @abc.abstractmethod
    def open(self) -> None:
        """Connect to the source and start delivering frames. Raises :class:`SourceError`."""

    @abc.abstractmethod
    def grab(self, timeout_s: float = 1.0) -> Grab | None:
        """Return the next frame, or ``None`` if none arrived within ``timeout_s`` seconds."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop and release the source. Safe to call more than once."""

    @property
    @abc.abstractmethod
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close`."""

    def reopen(self) -> None:
        """Close (ignoring errors of a broken connection) and open again."""
        with contextlib.suppress(SourceError):
            self.close()
        self.open()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RateLimiter:
    """Caps a loop at ``max_fps`` iterations per second without drift.

    Call :meth:`wait` once per iteration; it sleeps until the next slot. Slots are spaced
    exactly ``1 / max_fps`` apart from the first call, so sleep jitter does not accumulate. If
    the loop falls behind by more than one period (a slow grab), the schedule restarts from now
    instead of bursting to catch up. ``max_fps`` of ``None`` or ``0`` means no limit.

    ``clock`` and ``sleep`` can be replaced (e.g. in tests); they default to
    :func:`time.monotonic` and :func:`time.sleep`.
    """

    def __init__(
        self,
        max_fps: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if max_fps is not None and max_fps < 0:
            raise ValueError(f"max_fps must be positive, 0 or None (no limit); got {max_fps}")
        self.max_fps = max_fps or None
        self._period = 1.0 / self.max_fps if self.max_fps else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    @property
    def period_s(self) -> float:
        """Seconds between two slots (0 when unlimited)."""
        return self._period

    def reset(self) -> None:
        """Forget the schedule: the next :meth:`wait` returns at once."""
        self._next = None

    def wait(self) -> float:
        """Sleep until the next slot; return the seconds slept."""
        if not self._period:
            return 0.0
        now = self._clock()
        if self._next is None or now - self._next > self._period:
            # first call, or more than one period late: start a fresh schedule now
            self._next = now + self._period
            return 0.0
        delay = self._next - now
        self._next += self._period
        if delay > 0:
            self._sleep(delay)
            return delay
        return 0.0
