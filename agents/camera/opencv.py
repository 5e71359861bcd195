"""Frame sources read with OpenCV: USB cameras, network streams, video files, image folders."""

from __future__ import annotations

import fnmatch
import os
import re
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from procgraph.agents import imaging
from procgraph.agents.camera.sources import FrameSource, Grab, SourceError

__all__ = ["IMAGE_EXTENSIONS", "FolderSource", "OpenCVSource", "pixel_format_of"]

#: File endings :class:`FolderSource` picks up when no pattern is given.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".pgm",
    ".ppm",
    ".pnm",
    ".webp",
)

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def pixel_format_of(image: np.ndarray) -> str:
    """PFNC name of an OpenCV image: Mono8/Mono16, BGR8/BGR16, BGRa8/BGRa16.

    Raises :class:`SourceError` for other layouts (float images, 2-channel images...).
    """
    try:
        return imaging.pixel_format_of(image)
    except imaging.ImageFormatError:
        raise SourceError(
            f"unsupported image layout: dtype {image.dtype}, shape {image.shape}; "
            "use 8- or 16-bit grey, BGR or BGRA images"
        ) from None


def _as_format(frame: np.ndarray, gray: bool) -> np.ndarray:
    """Turn what OpenCV decoded into Mono8 (``gray``) or BGR8."""
    fmt = pixel_format_of(frame)
    return imaging.to_gray8(frame, fmt) if gray else imaging.to_bgr8(frame, fmt)


class OpenCVSource(FrameSource):
    """A camera or video read with ``cv2.VideoCapture``.

    Args:
        source: a USB camera index (``0``, or ``"0"``), a stream URL (``rtsp://...``,
            ``http://...``) or the path of a video file.
        gray: deliver ``Mono8`` ``(H, W)`` images instead of ``BGR8`` ``(H, W, 3)`` (uint8).
        loop: for a video file, start again at the end; otherwise :meth:`grab` returns None
            and :attr:`finished` becomes True once the file is exhausted.
        width, height, fps: requested capture size and rate, for USB cameras (the driver may
            pick the nearest mode it supports; check the delivered images).
        api_preference: an OpenCV back-end (``cv2.CAP_V4L2``, ``cv2.CAP_FFMPEG``...).

    A file is read as fast as :meth:`grab` is called; use
    :class:`~procgraph.agents.camera.sources.RateLimiter` with :attr:`fps` to replay it in real
    time. ``cv2.VideoCapture.read`` blocks, so ``timeout_s`` of :meth:`grab` is not enforced
    (OpenCV's own stream timeouts apply). A failed read of a camera or stream raises
    :class:`SourceError`; call :meth:`reopen` with a backoff to reconnect.
    """

    def __init__(
        self,
        source: int | str | os.PathLike[str],
        *,
        gray: bool = False,
        loop: bool = False,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        api_preference: int = cv2.CAP_ANY,
    ) -> None:
        self.gray = gray
        self.loop = loop
        self.width = width
        self.height = height
        self.requested_fps = fps
        self.api_preference = api_preference
        self.kind: str
        self.target: int | str
        if isinstance(source, int) and not isinstance(source, bool):
            self.kind, self.target = "usb", source
        elif isinstance(source, str) and source.strip().isdigit():
            self.kind, self.target = "usb", int(source.strip())
        elif isinstance(source, str) and _URL.match(source):
            self.kind, self.target = "stream", source
        elif isinstance(source, str | os.PathLike):
            self.kind, self.target = "file", os.fspath(source)
        else:
            raise SourceError(
                f"source must be a camera index, a URL or a video file path; got {source!r}"
            )
        self._cap: cv2.VideoCapture | None = None
        self._count = 0
        self._loops = 0

    @property
    def is_open(self) -> bool:
        """True while the capture is open."""
        return self._cap is not None

    @property
    def pixel_format(self) -> str:
        """``Mono8`` or ``BGR8``."""
        return "Mono8" if self.gray else "BGR8"

    @property
    def fps(self) -> float | None:
        """Frame rate reported by OpenCV (the file's rate for a video), if known."""
        if self._cap is None:
            return None
        value = float(self._cap.get(cv2.CAP_PROP_FPS))
        return value if value > 0 else None

    @property
    def frame_count(self) -> int | None:
        """Number of frames in a video file, if OpenCV knows it."""
        if self._cap is None or self.kind != "file":
            return None
        value = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return value if value > 0 else None

    def _describe(self) -> str:
        return {"usb": "USB camera", "stream": "stream", "file": "video file"}[
            self.kind
        ] + f" {self.target!r}"

    def open(self) -> None:
        """Open the camera, stream or file."""
        if self._cap is not None:
            return
        if self.kind == "file" and not Path(str(self.target)).is_file():
            raise SourceError(f"video file {self.target!r} does not exist; check the path")
        cap = cv2.VideoCapture(self.target, self.api_preference)
        if not cap.isOpened():
            cap.release()
            hints = {
                "usb": "check that the camera is plugged in, that the index is right "
                "(ls /dev/video*) and that no other program uses it",
                "stream": "check the URL, credentials and that the stream is reachable "
                "from this machine",
                "file": "the file may be corrupt or use a codec this OpenCV build cannot decode",
            }
            raise SourceError(f"cannot open {self._describe()}: {hints[self.kind]}")
        if self.kind == "usb":
            if self.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(self.width))
            if self.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(self.height))
            if self.requested_fps:
                cap.set(cv2.CAP_PROP_FPS, float(self.requested_fps))
        self._cap = cap
        self._count = 0
        self._loops = 0
        self.finished = False

    def close(self) -> None:
        """Release the capture (safe to call twice)."""
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def grab(self, timeout_s: float = 1.0) -> Grab | None:
        """Read the next frame; None at the end of a file (without ``loop``)."""
        if self._cap is None:
            raise SourceError(f"{self._describe()} is not open; call open() first")
        if self.finished:
            return None
        ok, frame = self._cap.read()
        if not ok or frame is None:
            if self.kind != "file":
                raise SourceError(f"lost {self._describe()}: no frame could be read; call reopen()")
            if not self.loop or not self._rewind():
                self.finished = True
                return None
            ok, frame = self._cap.read()
            if not ok or frame is None:
                self.finished = True
                return None
        received = time.time_ns()
        meta: dict[str, Any] = {"source": str(self.target), "loop": self._loops}
        if self.kind == "file":
            meta["pos_frames"] = int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) - 1
        self._count += 1
        return Grab(
            image=np.ascontiguousarray(_as_format(frame, self.gray)),
            pixel_format=self.pixel_format,
            timestamp_ns=received,
            frame_id=self._count,
            meta=meta,
        )

    def _rewind(self) -> bool:
        assert self._cap is not None
        if self._count == 0:
            return False  # nothing was ever read: looping would spin forever
        if not self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            # some back-ends cannot seek: reopen the file instead
            self._cap.release()
            self._cap = cv2.VideoCapture(self.target, self.api_preference)
            if not self._cap.isOpened():
                raise SourceError(f"cannot reopen {self._describe()} to loop it")
        self._loops += 1
        return True


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class FolderSource(FrameSource):
    """Images from a folder, one per :meth:`grab`, in natural order (``img2`` before ``img10``).

    Args:
        folder: the folder to read.
        pattern: glob pattern of the files to take (e.g. ``"*.png"``, ``"cam1_*.tif"``). When
            None, every file ending in one of :data:`IMAGE_EXTENSIONS` is taken.
        loop: start again after the last image; otherwise :meth:`grab` returns None and
            :attr:`finished` becomes True.
        recursive: also look in sub-folders (the pattern then applies to file names).

    Images are read with ``cv2.IMREAD_UNCHANGED``: 8- and 16-bit images keep their depth and
    channels (``Mono8``/``Mono16`` ``(H, W)``, ``BGR8``/``BGR16`` ``(H, W, 3)``,
    ``BGRa8``/``BGRa16`` ``(H, W, 4)``). The file list is taken at :meth:`open`. An empty
    folder or an unreadable file raises :class:`SourceError`.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        pattern: str | None = None,
        loop: bool = False,
        recursive: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.pattern = pattern
        self.loop = loop
        self.recursive = recursive
        self.files: list[Path] = []
        self._pos = 0
        self._count = 0
        self._loops = 0
        self._open = False

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._open

    def _list(self) -> list[Path]:
        candidates = self.folder.rglob("*") if self.recursive else self.folder.glob("*")
        files = []
        for path in candidates:
            if not path.is_file():
                continue
            if self.pattern is not None:
                if fnmatch.fnmatch(path.name, self.pattern):
                    files.append(path)
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(path)
        return sorted(files, key=lambda p: (_natural_key(p), str(p)))

    def open(self) -> None:
        """List the images; raises :class:`SourceError` if the folder has none."""
        if not self.folder.is_dir():
            raise SourceError(f"image folder {str(self.folder)!r} does not exist")
        self.files = self._list()
        if not self.files:
            wanted = (
                f"matching {self.pattern!r}"
                if self.pattern is not None
                else f"ending in {', '.join(IMAGE_EXTENSIONS)}"
            )
            raise SourceError(
                f"image folder {str(self.folder)!r} has no files {wanted}; "
                "add images or change the pattern"
            )
        self._pos = 0
        self._count = 0
        self._loops = 0
        self._open = True
        self.finished = False

    def close(self) -> None:
        """Forget the file list."""
        self._open = False

    def grab(self, timeout_s: float = 0.0) -> Grab | None:
        """Read the next image; None when all were read (without ``loop``)."""
        if not self._open:
            raise SourceError(f"image folder {str(self.folder)!r} is not open; call open() first")
        if self._pos >= len(self.files):
            if not self.loop:
                self.finished = True
                return None
            self._pos = 0
            self._loops += 1
        path = self.files[self._pos]
        self._pos += 1
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SourceError(
                f"cannot read image {str(path)!r}: not an image OpenCV can decode, or "
                "corrupt; remove it or narrow the pattern"
            )
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        fmt = pixel_format_of(image)
        self._count += 1
        return Grab(
            image=np.ascontiguousarray(image),
            pixel_format=fmt,
            timestamp_ns=time.time_ns(),
            frame_id=self._count,
            meta={"path": str(path), "loop": self._loops},
        )
