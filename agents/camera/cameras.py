"""Camera agents: GenICam, OpenCV, image folder and synthetic parts, one Frame per image.

Every camera agent publishes full frames on ``frames`` and, when ``preview_width > 0``,
small JPEG previews on ``preview`` (at most ``preview_fps``) for operator screens.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import cv2
import numpy as np
from procgraph.agents.messages import Frame, Preview
from pydantic import Field

from procgraph import Agent, Output


class CameraAgent(Agent):
    """Shared loop of all camera agents: open, grab, publish, reconnect with backoff.

    Subclasses implement ``open_source()``, ``grab()`` and ``close_source()``.
    """

    class Params(Agent.Params):
        camera: str = Field("", description="camera id in messages (default: agent name)")
        fps: float = Field(0.0, ge=0, description="frame rate cap; 0 = as fast as the source")
        key_format: str = Field("{camera}-{seq}", description="message key; {camera} {seq}")
        preview_width: int = Field(320, ge=0, description="preview width in px; 0 = none")
        preview_fps: float = Field(10.0, gt=0)
        count: int = Field(0, ge=0, description="stop publishing after N frames; 0 = never")

    frames = Output(Frame, doc="full-resolution frames")
    preview = Output(Preview, encoding={"image": "jpeg"}, maxlen=50, doc="small previews")

    def open_source(self) -> None:
        """Open the device or file (raise on failure; it is retried with backoff)."""
        raise NotImplementedError

    def grab(self) -> tuple[np.ndarray, str, dict[str, Any]] | None:
        """Return ``(image, pixel_format, extra Frame fields)`` or None if nothing yet."""
        raise NotImplementedError

    def close_source(self) -> None:
        """Release the device."""

    @property
    def finished(self) -> bool:
        """True when a finite source (file, folder) has no more frames."""
        return False

    def camera_id(self) -> str:
        """The camera id written into every frame."""
        return self.params.camera or self.context.agent

    def run(self) -> None:
        """Grab and publish until stopped; reopen the source when it fails."""
        p = self.params
        delay = 0.5
        seq = self.first_seq()
        period = 1.0 / p.fps if p.fps > 0 else 0.0
        next_at = time.monotonic()
        last_preview = 0.0
        opened = False
        while self.running:
            if not opened:
                try:
                    self.open_source()
                    opened, delay = True, 0.5
                except Exception as exc:
                    self.log.warning("cannot open camera %s: %s; retrying in %.1fs",
                                     self.camera_id(), exc, delay)
                    self.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
            if (p.count and seq >= p.count) or self.finished:
                self.sleep(0.2)
                continue
            if period:
                self.sleep(next_at - time.monotonic())
                next_at = max(next_at + period, time.monotonic() - period)
            self.seq = seq  # the sequence number the next frame gets
            try:
                grabbed = self.grab()
            except Exception as exc:
                self.log.warning("camera %s failed: %s; reopening", self.camera_id(), exc)
                self.close_source()
                opened = False
                continue
            if grabbed is None:
                continue
            image, pixel_format, extra = grabbed
            camera = self.camera_id()
            key = extra.pop("key", None) or p.key_format.format(camera=camera, seq=seq)
            capture_ns = extra.pop("capture_ns", None) or time.time_ns()
            frame = Frame(key=key, camera=camera, seq=seq, capture_ns=capture_ns, image=image,
                          pixel_format=pixel_format, **extra)
            self.frames.send(frame)
            self.sent_seq(seq)
            seq += 1
            now = time.monotonic()
            if p.preview_width and now - last_preview >= 1.0 / p.preview_fps:
                last_preview = now
                self.send_preview(frame)
        self.close_source()

    def first_seq(self) -> int:
        """Sequence number to start from (0; the synthetic camera resumes after restarts)."""
        return 0

    def sent_seq(self, seq: int) -> None:
        """Called after each frame is published."""

    def send_preview(self, frame: Frame) -> None:
        """Publish a downscaled 8-bit copy of ``frame``."""
        img = frame.image
        if img.dtype != np.uint8:
            shift = max(0, int(img.dtype.itemsize * 8) - 8)
            img = (img >> shift).astype(np.uint8) if img.dtype.kind == "u" else \
                cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]
        h, w = img.shape[:2]
        scale = min(1.0, self.params.preview_width / w)
        if scale < 1.0:
            img = cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))),
                             interpolation=cv2.INTER_AREA)
        self.preview.send(Preview(key=frame.key, camera=frame.camera, seq=frame.seq,
                                  capture_ns=frame.capture_ns, image=np.ascontiguousarray(img),
                                  scale=scale))


class SyntheticPartCamera(CameraAgent):
    """Renders machined parts (front or back view) with known defects, dust and lighting.

    Cameras with the same ``seed`` agree on every part, so front and back views of one
    part share a key (``part-<n>``). The ground truth travels in ``Frame.truth``.
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

    def setup(self) -> None:
        from procgraph.agents.camera import parts

        self._parts = parts
        self.params.fps = self.params.rate_hz
        self._counter_key = f"pg:{self.context.graph}:synthetic:{self.context.agent}:next"

    def open_source(self) -> None:
        """Nothing to open."""

    def first_seq(self) -> int:
        """Resume after a restart, so no part key is produced twice."""
        try:
            return int(self.context.redis().get(self._counter_key) or 0)
        except Exception:
            return 0

    def sent_seq(self, seq: int) -> None:
        """Remember progress in the broker, once the frame is surely there."""
        self.flush()
        self.context.redis().set(self._counter_key, seq + 1)

    def grab(self) -> tuple[np.ndarray, str, dict[str, Any]]:
        """Render the next part's view."""
        seq = self.seq
        rng = np.random.default_rng([self.params.seed, seq])
        spec = self._parts.make_part(seq, rng, self.params.defect_rate)
        img = self._parts.render_view(spec, self.params.view, tuple(self.params.size),
                                      self.params.channels, self.params.dust,
                                      self.params.lighting)
        defect = spec.defect(self.params.view)
        fmt = "Mono8" if self.params.channels == 1 else "BGR8"
        return img, fmt, {"truth": defect or "ok", "capture_ns": time.time_ns()}


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

    def open_source(self) -> None:
        """Open and configure the camera."""
        from procgraph.agents.camera.genicam import GenICamSource

        p = self.params
        self._src = GenICamSource(
            p.cti, serial=p.serial, device_id=p.device_id, index=p.index,
            pixel_format=p.pixel_format, width=p.width, height=p.height,
            offset_x=p.offset_x, offset_y=p.offset_y, exposure_us=p.exposure_us,
            gain_db=p.gain_db, frame_rate_hz=p.frame_rate_hz, trigger=p.trigger,
            trigger_source=p.trigger_source, nodes=p.nodes or None,
        )
        self._src.open()
        self.log.info("camera %s open: %s", self.camera_id(), self._src.name)

    def grab(self) -> tuple[np.ndarray, str, dict[str, Any]] | None:
        """Fetch one frame (triggering it in software mode)."""
        g = self._src.grab(self.params.timeout_s)
        if g is None:
            return None
        return g.image, g.pixel_format, {"capture_ns": g.timestamp_ns}

    def close_source(self) -> None:
        """Close the camera."""
        src = getattr(self, "_src", None)
        if src is not None:
            src.close()


class OpenCVCamera(CameraAgent):
    """A USB camera (index), an RTSP/HTTP stream (URL) or a video file, through OpenCV."""

    class Params(CameraAgent.Params):
        source: int | str = 0
        gray: bool = False
        loop: bool = False

    def open_source(self) -> None:
        """Open the capture."""
        from procgraph.agents.camera.opencv_sources import OpenCVSource

        src: int | str = self.params.source
        if isinstance(src, str) and not src.isdigit() and "://" not in src:
            src = str(self.context.resolve_path(src))
        self._src = OpenCVSource(src, gray=self.params.gray, loop=self.params.loop)
        self._src.open()

    @property
    def finished(self) -> bool:
        """A video file without loop ends."""
        src = getattr(self, "_src", None)
        return bool(src is not None and src.finished)

    def grab(self) -> tuple[np.ndarray, str, dict[str, Any]] | None:
        """Read the next frame."""
        g = self._src.grab(1.0)
        return None if g is None else (g.image, g.pixel_format, {})

    def close_source(self) -> None:
        """Release the capture."""
        src = getattr(self, "_src", None)
        if src is not None:
            src.close()


class FolderCamera(OpenCVCamera):
    """Images from a folder (sorted; loop or stop at the end), e.g. recorded parts."""

    class Params(CameraAgent.Params):
        folder: str
        pattern: str | None = None
        loop: bool = False

    def open_source(self) -> None:
        """Scan the folder."""
        from procgraph.agents.camera.opencv_sources import FolderSource

        self._src = FolderSource(self.context.resolve_path(self.params.folder),
                                 pattern=self.params.pattern, loop=self.params.loop)
        self._src.open()
