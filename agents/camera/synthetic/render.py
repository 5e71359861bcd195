"""Rendering one view of a part: scene, part, defect, dust, then lighting and sensor noise."""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
from procgraph.agents.camera.synthetic.defects import draw_chip, draw_dent, draw_dust, draw_scratch
from procgraph.agents.camera.synthetic.draw import Scene, disc, draw_back, draw_front, polar
from procgraph.agents.camera.synthetic.spec import VIEWS, PartSpec

__all__ = ["render_view"]

# Indices of the independent random streams of one view.
_STREAM_GEOMETRY, _STREAM_DEFECT, _STREAM_DUST, _STREAM_LIGHT, _STREAM_NOISE = range(5)

_NOISE_SIGMA = 2.5  # sensor noise, grey levels
_BGR_TINT = (1.0, 0.975, 0.93)  # cool LED ring light, applied to B, G, R


def _make_noise_tile(height: int, width: int) -> np.ndarray:
    """A fixed field of unit Gaussian noise, 1.5x the image size; views are random windows."""
    gen = np.random.default_rng(0x5EED)
    return gen.standard_normal((height + height // 2 + 1, width + width // 2 + 1), np.float32)


@lru_cache(maxsize=8)
def _noise_tile(height: int, width: int) -> np.ndarray:
    """:func:`_make_noise_tile`, kept (read-only) for lit views."""
    tile = _make_noise_tile(height, width)
    tile.setflags(write=False)
    return tile


@lru_cache(maxsize=8)
def _noise_steps(height: int, width: int) -> np.ndarray:
    """The noise tile in whole grey levels (floor of sigma x noise), for unlit views: adding
    it to the 8-bit image with saturation is the float path's clip-and-truncate in one pass
    (equal but for a few pixels in a million, by one level, where float32 rounding lands on
    a boundary)."""
    steps = np.floor(_make_noise_tile(height, width) * np.float32(_NOISE_SIGMA)).astype(np.int16)
    steps.setflags(write=False)
    return steps


@lru_cache(maxsize=8)
def _unit_axes(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates scaled to [-1, 1], for lighting fields."""
    ys = np.linspace(-1.0, 1.0, height, dtype=np.float32)
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def _finish(
    img: np.ndarray, lighting: bool, light_rng: np.random.Generator, noise_rng: np.random.Generator
) -> np.ndarray:
    """Apply lighting (gain, offset, gradient, hot spot) and sensor noise; return uint8."""
    h, w = img.shape
    oy, ox = int(noise_rng.integers(0, h // 2 + 1)), int(noise_rng.integers(0, w // 2 + 1))
    if not lighting:  # 8-bit + whole-level noise, saturated: a third of the float path's time
        return cv2.add(img, _noise_steps(h, w)[oy : oy + h, ox : ox + w], dtype=cv2.CV_8U)
    tile = _noise_tile(h, w)
    out = img.astype(np.float32)
    gain = light_rng.uniform(0.75, 1.25)
    offset = light_rng.uniform(-20.0, 20.0)
    psi = light_rng.uniform(0, 2 * math.pi)
    slope = light_rng.uniform(0.0, 0.25)
    spot = light_rng.uniform(0.0, 0.2)
    sx, sy = light_rng.uniform(-0.6, 0.6, 2)
    width = light_rng.uniform(0.4, 0.8)
    ys, xs = _unit_axes(h, w)
    field = np.add.outer(ys * (slope * math.sin(psi)), xs * (slope * math.cos(psi)) + 1.0)
    field *= gain
    field += np.multiply.outer(
        np.exp(-(((ys - sy) / width) ** 2)), np.exp(-(((xs - sx) / width) ** 2)) * (spot * gain)
    )
    out *= field
    out += offset
    out += tile[oy : oy + h, ox : ox + w] * _NOISE_SIGMA
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


@lru_cache(maxsize=1)
def _tint_lut() -> np.ndarray:
    """Look-up table turning a grey level into the BGR colour of the scene."""
    levels = np.arange(256, dtype=np.float32)
    lut = np.stack([np.clip(levels * g, 0, 255) for g in _BGR_TINT], -1).astype(np.uint8)
    lut = lut.reshape(256, 1, 3)
    lut.setflags(write=False)
    return lut


def render_view(
    spec: PartSpec,
    view: str,
    size: tuple[int, int] = (256, 256),
    channels: int = 1,
    dust: bool = True,
    lighting: bool = True,
) -> np.ndarray:
    """Draw one side of a part as a camera would see it.

    The picture depends only on the arguments (deterministic from ``spec.seed`` and ``view``).
    Whatever the flags, the defect on the requested side is drawn if ``spec`` has one; dust
    and lighting are nuisances that never create or hide a defect.

    Args:
        spec: the part to draw.
        view: "front" or "back".
        size: image size as (height, width), at least 32x32; 1024x1024 works too.
        channels: 1 for a grey image (H, W), 3 for a BGR colour image (H, W, 3).
        dust: add harmless dust specks and fibres.
        lighting: vary gain, offset, gradient and hot spot of the illumination.

    Returns:
        The image as uint8, shape (H, W) or (H, W, 3).
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    height, width = int(size[0]), int(size[1])
    if height < 32 or width < 32:
        raise ValueError(f"size must be at least (32, 32), got {size}")

    def stream(index: int) -> np.random.Generator:
        return np.random.default_rng([spec.seed, VIEWS.index(view), index])

    geo = stream(_STREAM_GEOMETRY)
    short = min(height, width)
    background = int(geo.integers(42, 62))
    scene = Scene(
        height=height,
        width=width,
        cx=width / 2 + geo.uniform(-0.06, 0.06) * short,
        cy=height / 2 + geo.uniform(-0.06, 0.06) * short,
        radius=short * geo.uniform(0.33, 0.37),
        theta=geo.uniform(0, 2 * math.pi),
        light=geo.uniform(0, 2 * math.pi),
        metal=int(geo.integers(125, 160)),
        background=background,
        px=short / 256,
    )
    img = np.full((height, width), background, np.uint8)
    # soft drop shadow of the part on the belt
    sx, sy = polar(scene.cx, scene.cy, 4 * scene.px, scene.light + math.pi)
    disc(img, sx, sy, scene.radius + scene.px, background - 18)
    kind = spec.defect(view)
    defect_rng = stream(_STREAM_DEFECT)

    def on_surface(holes: list[tuple[float, float, float]]) -> None:
        if kind == "scratch":
            draw_scratch(img, scene, defect_rng, holes)
        elif kind == "dent":
            draw_dent(img, scene, defect_rng, holes)

    draw = draw_front if view == "front" else draw_back
    draw(img, scene, geo, on_surface)
    if kind == "chip":
        draw_chip(img, scene, defect_rng)
    if dust:
        draw_dust(img, scene, stream(_STREAM_DUST))
    out = _finish(img, lighting, stream(_STREAM_LIGHT), stream(_STREAM_NOISE))
    if channels == 3:
        out = cv2.LUT(cv2.cvtColor(out, cv2.COLOR_GRAY2BGR), _tint_lut())
    return out
