"""Camera agents: the shared publishing loop and the GenICam, OpenCV and folder cameras.

Every camera agent publishes full frames on ``frames`` and, when ``preview_width > 0``,
small previews on ``preview`` (at most ``preview_fps``, JPEG on the wire) for operator screens.
The loop is the same for all: a :class:`~procgraph.agents.camera.sources.FrameSource` paced by
a :class:`~procgraph.agents.camera.sources.RateLimiter`, reopened with a backoff when it fails.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Literal

import numpy as np
from procgraph.agents import imaging
from procgraph.agents.camera.sources import FrameSource, Grab, RateLimiter, SourceError
from procgraph.agents.messages import Frame, Preview
from pydantic import Field

from procgraph import Agent, Output

__all__ = ["CameraAgent", "FolderCamera", "GenICamCamera", "OpenCVCamera"]

_BACKOFF_S = (0.5, 10.0)  # first and longest wait between two attempts to open a source


class CameraAgent(Agent):
    """Shared loop of all camera agents: open, grab, publish, reopen with backoff.

    A subclass returns its :class:`FrameSource` from :meth:`make_source`. (Older subclasses may
    instead implement ``open_source()``, ``grab() -> (image, pixel_format, extra Frame fields)``
    and ``close_source()``; the default :meth:`make_source` wraps those.)
    """

    class Params(Agent.Params):
        camera: str = Field("", description="camera id in messages (default: agent name)")
        fps: float = Field(0.0, ge=0, description="frame rate cap; 0 = as fast as the source")
        key_format: str = Field("{camera}-{seq}", description="message key; {camera} {seq}")
        preview_width: int = Field(320, ge=0, description="preview width in px; 0 = none")
        preview_fps: float = Field(10.0, gt=0)
        count: int = Field(0, ge=0, description="stop publishing after N frames; 0 = never")

    params: Params
    frames = Output(Frame, doc="full-resolution frames")
    preview = Output(Preview, encoding={"image": "jpeg"}, maxlen=50, doc="small previews")

    #: seconds one grab may wait for a frame
    grab_timeout_s: float = 1.0

    def make_source(self) -> FrameSource:
        """The frame source to read (not opened yet); called once, in :meth:`run`."""
        return _HookSource(self)

    def camera_id(self) -> str:
        """The camera id written into every frame."""
        return str(self.params.camera or self.context.agent)

    def first_seq(self) -> int:
        """Sequence number to start from (0; the synthetic camera resumes after restarts)."""
        return 0

    def sent_seq(self, seq: int) -> None:
        """Called after the frame with sequence number ``seq`` was sent."""

    def frame_fields(self, grab: Grab) -> dict[str, Any]:
        """Extra :class:`Frame` fields for ``grab`` (default: ``grab.meta["frame_fields"]``)."""
        return dict(grab.meta.get("frame_fields", {}))

    def run(self) -> None:
        """Grab and publish until stopped; reopen the source (with a backoff) when it fails."""
        p = self.params
        source = self.make_source()
        limiter = RateLimiter(p.fps or None, sleep=self.sleep)
        seq = self.first_seq()
        backoff, broken, last_preview = _BACKOFF_S[0], False, 0.0
        try:
            while self.running:
                if broken or not source.is_open:
                    try:
                        source.reopen() if broken else source.open()
                    except Exception as exc:
                        self.log.warning("cannot open camera %s: %s; retrying in %.1fs",
                                         self.camera_id(), exc, backoff)
                        broken = True
                        self.sleep(backoff)
                        backoff = min(backoff * 2, _BACKOFF_S[1])
                        continue
                    broken, backoff = False, _BACKOFF_S[0]
                    self.log.info("camera %s open: %s", self.camera_id(),
                                  getattr(source, "name", type(source).__name__))
                if (p.count and seq >= p.count) or source.finished:
                    self.sleep(0.2)
                    continue
                limiter.wait()
                self.seq = seq  # the sequence number the next frame gets
                try:
                    grab = source.grab(self.grab_timeout_s)
                except Exception as exc:
                    self.log.warning("camera %s failed: %s; reopening", self.camera_id(), exc)
                    broken = True
                    continue
                if grab is None:
                    continue
                frame = self._frame(grab, seq)
                self.frames.send(frame)
                self.sent_seq(seq)
                seq += 1
                now = time.monotonic()
                if p.preview_width and now - last_preview >= 1.0 / p.preview_fps:
                    last_preview = now
                    self.send_preview(frame)
        finally:
            with contextlib.suppress(Exception):
                source.close()

    def _frame(self, grab: Grab, seq: int) -> Frame:
        camera = self.camera_id()
        fields = self.frame_fields(grab)
        key = fields.pop("key", None) or self.params.key_format.format(camera=camera, seq=seq)
        return Frame(key=key, camera=camera, seq=seq, capture_ns=grab.timestamp_ns,
                     image=grab.image, pixel_format=grab.pixel_format, **fields)

    def send_preview(self, frame: Frame) -> None:
        """Publish a downscaled 8-bit copy of ``frame`` (grey or BGR, by its pixel format)."""
        try:
            image, scale = imaging.preview(frame.image, frame.pixel_format,
                                           self.params.preview_width)
        except imaging.ImageFormatError as exc:
            if not getattr(self, "_preview_warned", False):
                self._preview_warned = True
                self.log.warning("camera %s: no previews: %s", self.camera_id(), exc)
            return
        self.preview.send(Preview(key=frame.key, camera=frame.camera, seq=frame.seq,
                                  capture_ns=frame.capture_ns, image=image, scale=scale))

    # -- the older hook API, used by the default make_source() --------------------------------
    def open_source(self) -> None:
        """Open the device or file (raise on failure; it is retried with backoff)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_source()")

    def grab(self) -> tuple[np.ndarray, str, dict[str, Any]] | None:
        """Return ``(image, pixel_format, extra Frame fields)`` or None if nothing yet."""
        raise NotImplementedError

    def close_source(self) -> None:
        """Release the device."""

    @property
    def finished(self) -> bool:
        """True when a finite source (file, folder) has no more frames."""
        return False


class _HookSource(FrameSource):
    """A :class:`FrameSource` over a camera agent's ``open_source/grab/close_source`` hooks."""

    def __init__(self, agent: CameraAgent) -> None:
        self._agent = agent
        self._open = False
        self._count = 0

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        self._agent.open_source()
        self._open = True

    def grab(self, timeout_s: float = 1.0) -> Grab | None:
        got = self._agent.grab()
        self.finished = self._agent.finished
        if got is None:
            return None
        image, pixel_format, extra = got
        extra = dict(extra)
        stamp = extra.pop("capture_ns", None) or time.time_ns()
        self._count += 1
        return Grab(image=image, pixel_format=pixel_format, timestamp_ns=stamp,
                    frame_id=self._count, meta={"frame_fields": extra})

    def close(self) -> None:
        self._open = False
        try:
            self._agent.close_source()
        except Exception as exc:
            raise SourceError(f"closing the camera failed: {exc}") from exc


class GenICamCamera(CameraAgent):
    """A GenICam camera (GigE Vision, USB3 Vision, ...) through a GenTL producer."""

    class Params(CameraAgent.Params):
        cti: str | list[str] | None = Field(None, description="GenTL producer .cti path(s)")
        serial: str | None = None
        device_id: str | None = None
        index: int | None = None
        pixel_format: str | None = None
        width: int | None = None
        height: int | None = None
        offset_x: int | None = None
        offset_y: int | None = None
        exposure_us: float | None = None
        gain_db: float | None = None
        frame_rate_hz: float | None = None
        trigger: Literal["free-run", "software", "hardware"] = "free-run"
        trigger_source: str = "Line1"
        nodes: dict[str, int | float | str | bool] = {}
        timeout_s: float = Field(2.0, gt=0)

    params: Params

    def setup(self) -> None:
        """Take the grab timeout from the parameters."""
        self.grab_timeout_s = self.params.timeout_s

    def make_source(self) -> FrameSource:
        """A :class:`~procgraph.agents.camera.genicam.GenICamSource` from the parameters."""
        from procgraph.agents.camera.genicam import GenICamSource

        p = self.params
        return GenICamSource(
            p.cti, serial=p.serial, device_id=p.device_id, index=p.index,
            pixel_format=p.pixel_format, width=p.width, height=p.height,
            offset_x=p.offset_x, offset_y=p.offset_y, exposure_us=p.exposure_us,
            gain_db=p.gain_db, frame_rate_hz=p.frame_rate_hz, trigger=p.trigger,
            trigger_source=p.trigger_source, nodes=p.nodes or None,
        )


class OpenCVCamera(CameraAgent):
    """A USB camera (index), an RTSP/HTTP stream (URL) or a video file, through OpenCV."""

    class Params(CameraAgent.Params):
        source: int | str = 0
        gray: bool = False
        loop: bool = False

    params: Params

    def make_source(self) -> FrameSource:
        """An :class:`~procgraph.agents.camera.opencv.OpenCVSource`; paths are graph-relative."""
        from procgraph.agents.camera.opencv import OpenCVSource

        src: int | str = self.params.source
        if isinstance(src, str) and not src.isdigit() and "://" not in src:
            src = str(self.context.resolve_path(src))
        return OpenCVSource(src, gray=self.params.gray, loop=self.params.loop)


class FolderCamera(CameraAgent):
    """Images from a folder (sorted; loop or stop at the end), e.g. recorded parts."""

    class Params(CameraAgent.Params):
        folder: str
        pattern: str | None = None
        loop: bool = False

    params: Params

    def make_source(self) -> FrameSource:
        """A :class:`~procgraph.agents.camera.opencv.FolderSource` on the graph-relative folder."""
        from procgraph.agents.camera.opencv import FolderSource

        return FolderSource(self.context.resolve_path(self.params.folder),
                            pattern=self.params.pattern, loop=self.params.loop)
