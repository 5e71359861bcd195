"""Drawing for the operator screen: verdicts on previews, reject thumbnails, JPEG.

Pixel formats and JPEG encoding come from :mod:`procgraph.agents.imaging`, the one module
that converts images for the cameras, the classifier and this screen; this module only draws
(OpenCV) on the 8-bit BGR images it gets from there.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from procgraph.agents.imaging import encode_jpeg, to_bgr8
from procgraph.agents.messages import Verdict

OK_BGR = (80, 200, 60)
BAD_BGR = (60, 60, 235)
IDLE_BGR = (150, 150, 150)
JPEG_QUALITY = 80
THUMB_HEIGHT = 120


def as_bgr(image: np.ndarray, pixel_format: str | None = None) -> np.ndarray:
    """A writable 8-bit BGR copy of a preview (gray, BGR or BGRA unless ``pixel_format``)."""
    src = np.asarray(image)
    img = to_bgr8(src, pixel_format)
    if np.shares_memory(img, src) or not img.flags.writeable:
        img = np.array(img, copy=True)
    return img


def _drawable(text: str) -> str:
    """``text`` as the ASCII OpenCV's fonts draw (anything else, lone surrogates too: ``?``)."""
    return text.encode("ascii", "replace").decode("ascii")


def fit_bytes(image: np.ndarray, limit: int) -> np.ndarray:
    """``image`` scaled down (same dtype and channels) until it has at most ``limit`` bytes."""
    if image.nbytes <= limit or image.ndim < 2 or min(image.shape[:2]) == 0:
        return image
    factor = math.sqrt(limit / image.nbytes)
    h, w = image.shape[:2]
    size = (max(1, int(w * factor)), max(1, int(h * factor)))
    try:
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if image.ndim == 3 and small.ndim == 2:
            small = small[:, :, None]
    except cv2.error:  # a dtype or channel count OpenCV cannot scale: take every k-th pixel
        step = math.ceil(1 / factor)
        small = np.ascontiguousarray(image[::step, ::step])
    return np.asarray(small)


def annotate(image: np.ndarray, verdict: Verdict | None, matched: bool = True) -> np.ndarray:
    """Draw a verdict on a preview: a green (OK) or red (defective) frame and a label banner.

    ``matched`` says whether the verdict belongs to this very image; when it does not (the
    verdict of an earlier frame is shown), the banner says so with a trailing ``*``.
    The input image is left untouched.
    """
    img = as_bgr(image)
    h, w = img.shape[:2]
    if verdict is None:
        colour = IDLE_BGR
        text = "waiting for verdict"
    else:
        colour = BAD_BGR if verdict.defective else OK_BGR
        text = _drawable(f"{verdict.label.upper()[:40]} {verdict.score:.2f}"
                         + ("" if matched else " *"))
    thick = max(2, round(min(h, w) / 60))
    cv2.rectangle(img, (thick // 2, thick // 2), (w - 1 - thick // 2, h - 1 - thick // 2),
                  colour, thick)
    scale = max(0.35, min(h, w) / 480)
    weight = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
    pad = max(3, round(6 * scale))
    x0, y0 = thick, thick
    cv2.rectangle(img, (x0, y0), (min(w - 1, x0 + tw + 2 * pad), y0 + th + base + 2 * pad),
                  colour, -1)
    ink = (255, 255, 255) if verdict is not None and verdict.defective else (20, 20, 20)
    cv2.putText(img, text, (x0 + pad, y0 + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, ink,
                weight, cv2.LINE_AA)
    return img


def jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of a drawn (BGR or gray uint8) image, at the screen's quality."""
    return encode_jpeg(image, quality)


def placeholder(lines: list[str], width: int = 160, height: int = THUMB_HEIGHT) -> np.ndarray:
    """A dark tile with a red frame and centred text, for a view that has no image."""
    img = np.full((height, width, 3), 40, np.uint8)
    cv2.rectangle(img, (1, 1), (width - 2, height - 2), BAD_BGR, 2)
    step = 22
    y = height // 2 - (len(lines) - 1) * step // 2 + 5
    for line in map(_drawable, lines):
        (tw, _), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        cv2.putText(img, line, (max(4, (width - tw) // 2), y), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (215, 215, 215), 1, cv2.LINE_AA)
        y += step
    return img


def thumbnail(tiles: list[np.ndarray], height: int = THUMB_HEIGHT) -> np.ndarray:
    """Scale drawn images to one height and put them side by side."""
    if not tiles:
        raise ValueError("a thumbnail needs at least one tile")
    scaled = []
    for tile in tiles:
        h, w = tile.shape[:2]
        new_w = max(1, round(w * height / h))
        scaled.append(cv2.resize(tile, (new_w, height), interpolation=cv2.INTER_AREA))
    return scaled[0] if len(scaled) == 1 else np.hstack(scaled)
