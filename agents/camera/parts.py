"""Synthetic images of machined parts, for demos, tests and training the demo models.

A part is a round machined flange photographed from two sides. The ``"front"`` view shows a
raised hub, a bore and six through bolt holes; the ``"back"`` view shows lathe marks, an O-ring
groove, a keyed bore, two blind dowel holes and a laser-etched matrix code. Each side may carry
one defect:

- ``"scratch"``: a thin, long, nearly straight bright or dark line on the metal surface;
- ``"dent"``: a shaded elliptical depression, lit from the scene's light direction;
- ``"chip"``: a missing notch on the outer edge, with a bright fracture face.

Everything that is *not* a defect varies too, so that a classifier has to learn the defect and
not the picture: position jitter, rotation, size, metal tone, lighting (gain, offset, gradient,
hot spot), sensor noise, and harmless dust (soft specks and short curled fibres) on the part,
the belt and the lens.

Rendering is deterministic: the same :class:`PartSpec`, view, size and flags give the same
image, byte for byte. Geometry, defect, dust, lighting and noise draw from separate random
streams, so switching ``dust`` or ``lighting`` off leaves the rest of the picture unchanged.

This module only needs numpy and OpenCV. A 256x256 view renders in well under 5 ms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

__all__ = ["DEFECT_KINDS", "VIEWS", "PartSpec", "make_part", "render_view"]

DEFECT_KINDS = ("scratch", "dent", "chip")
"""The defect kinds :func:`render_view` can draw."""

VIEWS = ("front", "back")
"""The sides of a part that :func:`render_view` can draw."""

_SHIFT = 4  # fractional bits for OpenCV drawing calls (sub-pixel positions)
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA

# Indices of the independent random streams of one view.
_STREAM_GEOMETRY, _STREAM_DEFECT, _STREAM_DUST, _STREAM_LIGHT, _STREAM_NOISE = range(5)

_NOISE_SIGMA = 2.5  # sensor noise, grey levels
_BGR_TINT = (1.0, 0.975, 0.93)  # cool LED ring light, applied to B, G, R


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


# --------------------------------------------------------------------------------------------
# drawing helpers


def _p(x: float, y: float) -> tuple[int, int]:
    """Sub-pixel point for OpenCV calls that take ``shift=_SHIFT``."""
    return (round(x * _ONE), round(y * _ONE))


def _r(radius: float) -> int:
    """Sub-pixel radius for OpenCV calls that take ``shift=_SHIFT``."""
    return max(1, round(radius * _ONE))


def _disc(img: np.ndarray, cx: float, cy: float, radius: float, value: float) -> None:
    """Filled anti-aliased disc."""
    cv2.circle(img, _p(cx, cy), _r(radius), int(value), -1, _AA, _SHIFT)


def _ring(img: np.ndarray, cx: float, cy: float, radius: float, value: float, width: int) -> None:
    """Anti-aliased circle outline."""
    cv2.circle(img, _p(cx, cy), _r(radius), int(value), width, _AA, _SHIFT)


def _lit_step(
    img: np.ndarray,
    cx: float,
    cy: float,
    radius: float,
    light_deg: float,
    bright: float,
    dark: float,
    width: int,
) -> None:
    """A circular step edge: the half facing the light is bright, the other half dark."""
    centre, axes = _p(cx, cy), (_r(radius), _r(radius))
    cv2.ellipse(img, centre, axes, light_deg, -90, 90, int(bright), width, _AA, _SHIFT)
    cv2.ellipse(img, centre, axes, light_deg, 90, 270, int(dark), width, _AA, _SHIFT)


def _polar(cx: float, cy: float, radius: float, angle: float) -> tuple[float, float]:
    """Point at ``radius`` and ``angle`` (radians, image coordinates) from the centre."""
    return cx + radius * math.cos(angle), cy + radius * math.sin(angle)


@lru_cache(maxsize=8)
def _noise_tile(height: int, width: int) -> np.ndarray:
    """A fixed field of unit Gaussian noise, 1.5x the image size; views are random windows."""
    gen = np.random.default_rng(0x5EED)
    tile = gen.standard_normal((height + height // 2 + 1, width + width // 2 + 1), np.float32)
    tile.setflags(write=False)
    return tile


@lru_cache(maxsize=8)
def _unit_axes(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates scaled to [-1, 1], for lighting fields."""
    ys = np.linspace(-1.0, 1.0, height, dtype=np.float32)
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


_Hook = Callable[[list[tuple[float, float, float]]], None]


@dataclass
class _Scene:
    """Geometry of one view, shared by the part, defect and dust drawing steps."""

    height: int
    width: int
    cx: float
    cy: float
    radius: float
    theta: float  # rotation of the part, radians
    light: float  # in-plane direction the light comes from, radians
    metal: int  # base grey of the machined surface
    background: int
    px: float  # size of one "design pixel" (the image's short side / 256)


# --------------------------------------------------------------------------------------------
# the two sides


def _draw_front(img: np.ndarray, sc: _Scene, geo: np.random.Generator, on_surface: _Hook) -> None:
    """Flange with a raised hub, a countersunk bore and six through bolt holes.

    ``on_surface`` is called with the holes (x, y, radius) once the surface is drawn and before
    the holes are cut, so that surface defects lie under them.
    """
    cx, cy, r, m = sc.cx, sc.cy, sc.radius, sc.metal
    light_deg = math.degrees(sc.light)
    w1 = max(1, round(sc.px))
    hub = r * geo.uniform(0.55, 0.6)
    hole_r, pitch = r * 0.075, r * geo.uniform(0.77, 0.8)
    centres = [_polar(cx, cy, pitch, sc.theta + k * math.pi / 3) for k in range(6)]
    bore = r * 0.25
    holes = [(hx, hy, hole_r * 1.4) for hx, hy in centres] + [(cx, cy, bore * 1.22)]

    _disc(img, cx, cy, r, m)
    _ring(img, cx, cy, r - 1.5 * sc.px, m + 30, max(1, round(2 * sc.px)))  # outer chamfer
    # turned face: faint concentric tool marks
    for k, rr in enumerate(np.arange(0.62, 0.97, 0.045) * r):
        _ring(img, cx, cy, float(rr), m + (4 if k % 2 else -4), w1)
    _disc(img, cx, cy, hub, m + 12)
    _lit_step(img, cx, cy, hub, light_deg, m + 50, m - 45, w1)
    for rr in np.arange(0.32, 0.95, 0.08) * hub:
        _ring(img, cx, cy, float(rr), m + 17, w1)
    on_surface(holes)
    for hx, hy in centres:
        _disc(img, hx, hy, hole_r * 1.4, m + 25)  # countersink
        _disc(img, hx, hy, hole_r, sc.background - 15)
    _disc(img, cx, cy, bore * 1.22, m + 35)
    _disc(img, cx, cy, bore, sc.background - 20)


def _draw_back(img: np.ndarray, sc: _Scene, geo: np.random.Generator, on_surface: _Hook) -> None:
    """Back face: lathe marks, O-ring groove, keyed bore, blind dowel holes, matrix code.

    ``on_surface`` is called with the holes and marks (x, y, radius) once the turned surface and
    the O-ring groove are drawn and before holes, code and bore are cut: a scratch or dent made
    after machining marks the groove as well, it is not hidden under it.
    """
    cx, cy, r, m = sc.cx, sc.cy, sc.radius, sc.metal
    light_deg = math.degrees(sc.light)
    w1 = max(1, round(sc.px))
    groove, gw = r * geo.uniform(0.68, 0.72), r * 0.05
    dowels = [_polar(cx, cy, r * 0.5, sc.theta + a * math.pi / 2) for a in (1, 3)]
    cell, n = r * 0.022, 8
    mx, my = _polar(cx, cy, r * 0.855, sc.theta + math.pi / 4)
    bits = geo.random((n, n)) < 0.5
    bore = r * 0.25
    holes = [(cx, cy, bore * 1.5), (mx, my, cell * n * 0.75)]
    holes += [(hx, hy, r * 0.07) for hx, hy in dowels]

    _disc(img, cx, cy, r, m)
    _ring(img, cx, cy, r - 1.5 * sc.px, m + 25, max(1, round(2 * sc.px)))
    for k, rr in enumerate(np.arange(0.3, 0.97, 0.035) * r):
        _ring(img, cx, cy, float(rr), m + (7 if k % 3 else -7), w1)
    _ring(img, cx, cy, groove, m - 38, max(1, round(gw)))
    _lit_step(img, cx, cy, groove - gw / 2, light_deg + 180, m + 35, m - 55, w1)
    _lit_step(img, cx, cy, groove + gw / 2, light_deg, m + 35, m - 55, w1)
    on_surface(holes)
    for hx, hy in dowels:
        _disc(img, hx, hy, r * 0.05, m - 60)
        _lit_step(img, hx, hy, r * 0.05, light_deg + 180, m + 30, m - 70, w1)
    # laser-etched 8x8 matrix code between the groove and the rim, rotating with the part
    bits[:, 0] = bits[-1, :] = True  # the "L" finder pattern
    iy, ix = np.nonzero(bits)
    c, s = math.cos(sc.theta), math.sin(sc.theta)
    corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
    u = (ix[:, None] + corners[None, :, 0] - n / 2) * cell
    v = (iy[:, None] + corners[None, :, 1] - n / 2) * cell
    pts = np.stack([mx + u * c - v * s, my + u * s + v * c], axis=-1)
    cv2.fillPoly(img, list(np.round(pts * _ONE).astype(np.int32)), int(m - 65), _AA, _SHIFT)
    _disc(img, cx, cy, bore * 1.15, m + 30)
    _disc(img, cx, cy, bore, sc.background - 20)
    kx, ky = _polar(cx, cy, bore, sc.theta)
    key = cv2.boxPoints(((kx, ky), (bore * 0.5, bore * 0.45), math.degrees(sc.theta)))
    cv2.fillConvexPoly(img, np.round(key * _ONE).astype(np.int32), sc.background - 20, _AA, _SHIFT)


# --------------------------------------------------------------------------------------------
# defects


def _surface_point(
    sc: _Scene, rng: np.random.Generator, holes: list[tuple[float, float, float]], margin: float
) -> tuple[float, float]:
    """A random point on bare metal, at least ``margin`` away from holes and the rim."""
    x = y = 0.0
    for _ in range(30):
        rad = sc.radius * math.sqrt(rng.uniform(0.12, 0.85**2))
        x, y = _polar(sc.cx, sc.cy, rad, rng.uniform(0, 2 * math.pi))
        if rad + margin < sc.radius * 0.97 and all(
            math.hypot(x - hx, y - hy) > hr + margin for hx, hy, hr in holes
        ):
            break
    return x, y


def _scratch_path(
    sc: _Scene, rng: np.random.Generator, length: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """A candidate scratch: 9 points along a gently curved line; also returns its heading."""
    rad = sc.radius * math.sqrt(rng.uniform(0.1, 0.5))
    x0, y0 = _polar(sc.cx, sc.cy, rad, rng.uniform(0, 2 * math.pi))
    heading = rng.uniform(0, 2 * math.pi)
    bend = rng.uniform(-0.25, 0.25)  # total change of heading along the scratch, radians
    t = np.linspace(-0.5, 0.5, 9)
    ang = heading + bend * t
    step = length / (len(t) - 1)
    xs = (
        x0
        + np.concatenate([[0.0], np.cumsum(np.cos(ang[1:]) * step)])
        - length / 2 * math.cos(heading)
    )
    ys = (
        y0
        + np.concatenate([[0.0], np.cumsum(np.sin(ang[1:]) * step)])
        - length / 2 * math.sin(heading)
    )
    return xs, ys, heading


def _on_bare_metal(
    sc: _Scene, xs: np.ndarray, ys: np.ndarray, holes: list[tuple[float, float, float]]
) -> float:
    """Fraction of a polyline (densely resampled) that lies on metal, off holes and rim."""
    t = np.linspace(0, len(xs) - 1, 8 * (len(xs) - 1) + 1)
    px, py = np.interp(t, np.arange(len(xs)), xs), np.interp(t, np.arange(len(ys)), ys)
    ok = np.hypot(px - sc.cx, py - sc.cy) < sc.radius * 0.93
    for hx, hy, hr in holes:
        ok &= np.hypot(px - hx, py - hy) > hr + 1.5 * sc.px
    return float(ok.mean())


def _draw_scratch(
    img: np.ndarray, sc: _Scene, rng: np.random.Generator, holes: list[tuple[float, float, float]]
) -> None:
    """A thin, long, gently curved line, bright or dark, kept inside the metal.

    The line is placed so that most of it lies on bare metal: a scratch that mostly vanishes
    into a bore or a bolt hole is not one an inspector could see, so it would be a wrong label.
    """
    r = sc.radius
    length = r * rng.uniform(0.45, 0.75)
    best: tuple[float, np.ndarray, np.ndarray, float] | None = None
    for _ in range(20):
        xs, ys, heading = _scratch_path(sc, rng, length)
        frac = _on_bare_metal(sc, xs, ys, holes)
        if best is None or frac > best[0]:
            best = (frac, xs, ys, heading)
        if frac >= 0.85:
            break
    assert best is not None
    _, xs, ys, heading = best
    # keep it on the part: pull points beyond 93% of the radius back inside
    d = np.hypot(xs - sc.cx, ys - sc.cy)
    k = np.minimum(1.0, r * 0.93 / np.maximum(d, 1e-6))
    xs, ys = sc.cx + (xs - sc.cx) * k, sc.cy + (ys - sc.cy) * k
    pts = np.round(np.stack([xs, ys], -1) * _ONE).astype(np.int32)
    sign = 1 if rng.random() < 0.5 else -1
    value = int(np.clip(sc.metal + sign * rng.uniform(70, 100), 0, 255))
    width = max(1, round(sc.px * rng.uniform(1.5, 2.5)))
    cv2.polylines(img, [pts], False, value, width, _AA, _SHIFT)
    # the lip thrown up beside the groove catches the light: a fainter companion line
    off = _p(math.cos(heading + math.pi / 2) * sc.px, math.sin(heading + math.pi / 2) * sc.px)
    lip = int(np.clip(sc.metal - sign * 25, 0, 255))
    cv2.polylines(img, [pts + np.array(off, np.int32)], False, lip, 1, _AA, _SHIFT)


def _draw_dent(
    img: np.ndarray, sc: _Scene, rng: np.random.Generator, holes: list[tuple[float, float, float]]
) -> None:
    """A shaded elliptical depression: dark on the side facing the light, bright opposite."""
    a = sc.radius * rng.uniform(0.10, 0.15)
    b = a * rng.uniform(0.55, 0.9)
    phi = rng.uniform(0, math.pi)
    x0, y0 = _surface_point(sc, rng, holes, a)
    strength = rng.uniform(65, 90)
    x_lo, x_hi = max(0, int(x0 - a) - 2), min(sc.width, int(x0 + a) + 3)
    y_lo, y_hi = max(0, int(y0 - a) - 2), min(sc.height, int(y0 + a) + 3)
    if x_hi <= x_lo or y_hi <= y_lo:
        return
    gx = np.arange(x_lo, x_hi, dtype=np.float32) + 0.5 - x0
    gy = np.arange(y_lo, y_hi, dtype=np.float32)[:, None] + 0.5 - y0
    c, s = math.cos(phi), math.sin(phi)
    u, v = gx * c + gy * s, -gx * s + gy * c
    q = (u / a) ** 2 + (v / b) ** 2
    inside = np.clip(1.0 - q, 0.0, None)
    # depth = inside**2; brightness ~ grad(depth) . light, plus a little occlusion darkening
    dq_dx = 2 * u / a**2 * c - 2 * v / b**2 * s
    dq_dy = 2 * u / a**2 * s + 2 * v / b**2 * c
    shade = -2 * inside * (dq_dx * math.cos(sc.light) + dq_dy * math.sin(sc.light))
    shade /= max(float(np.abs(shade).max()), 1e-6)
    delta = strength * shade - 0.3 * strength * inside**2
    patch = img[y_lo:y_hi, x_lo:x_hi]
    np.clip(patch + delta, 0, 255, out=delta)
    patch[...] = delta.astype(np.uint8)


def _draw_chip(img: np.ndarray, sc: _Scene, rng: np.random.Generator) -> None:
    """A notch broken out of the outer edge, with a bright, jagged fracture face."""
    r = sc.radius
    alpha = rng.uniform(0, 2 * math.pi)
    half = rng.uniform(0.1, 0.16)  # half-width along the rim, in radians (~ fraction of r)
    depth = r * rng.uniform(0.1, 0.16)
    n = 5
    t = np.linspace(-1.0, 1.0, n)
    angles = alpha + half * t * (1 + 0.15 * rng.uniform(-1, 1, n))
    prof = np.sqrt(np.clip(1 - t**2, 0, None)) * (0.75 + 0.5 * rng.random(n))
    radii = r - depth * prof
    radii[0] = radii[-1] = r + 1.0
    inner = np.stack([sc.cx + radii * np.cos(angles), sc.cy + radii * np.sin(angles)], -1)
    outer_angles = np.array([alpha + half * 1.05, alpha, alpha - half * 1.05])
    outer = np.stack(
        [
            sc.cx + (r + 3 * sc.px) * np.cos(outer_angles),
            sc.cy + (r + 3 * sc.px) * np.sin(outer_angles),
        ],
        -1,
    )
    poly = np.round(np.concatenate([inner, outer]) * _ONE).astype(np.int32)
    cv2.fillPoly(img, [poly], sc.background, _AA, _SHIFT)
    face = np.round(inner[1:-1] * _ONE).astype(np.int32)
    bright = int(np.clip(sc.metal + rng.uniform(40, 70), 0, 255))
    cv2.polylines(img, [face], False, bright, max(1, round(sc.px * 1.5)), _AA, _SHIFT)


# --------------------------------------------------------------------------------------------
# dust, lighting, noise


def _draw_dust(img: np.ndarray, sc: _Scene, rng: np.random.Generator) -> None:
    """Soft dark and light specks and short curled fibres; none of them is a defect."""
    dark = np.zeros_like(img)
    light = np.zeros_like(img)
    h, w, px = sc.height, sc.width, sc.px
    for _ in range(int(rng.integers(2, 14))):
        # most dust lands on or near the part (it is what the camera looks at)
        x, y = _polar(sc.cx, sc.cy, sc.radius * 1.2 * math.sqrt(rng.random()), rng.uniform(0, 7))
        layer = dark if rng.random() < 0.7 else light
        _disc(layer, x, y, px * rng.uniform(0.6, 2.4), rng.uniform(25, 90))
    for _ in range(int(rng.integers(0, 3))):
        x, y = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
        seg = px * rng.uniform(2.0, 4.5)
        heading = rng.uniform(0, 2 * math.pi)
        turns = np.cumsum(rng.normal(0, 0.6, 7))
        xs = x + np.concatenate([[0.0], np.cumsum(np.cos(heading + turns) * seg)])
        ys = y + np.concatenate([[0.0], np.cumsum(np.sin(heading + turns) * seg)])
        pts = np.round(np.stack([xs, ys], -1) * _ONE).astype(np.int32)
        layer = dark if rng.random() < 0.75 else light
        cv2.polylines(layer, [pts], False, int(rng.uniform(30, 70)), max(1, round(px)), _AA, _SHIFT)
    k = 2 * max(1, round(px)) + 1
    sigma = 0.7 * px
    cv2.subtract(img, cv2.GaussianBlur(dark, (k, k), sigma), dst=img)
    cv2.add(img, cv2.GaussianBlur(light, (k, k), sigma), dst=img)


def _finish(
    img: np.ndarray, lighting: bool, light_rng: np.random.Generator, noise_rng: np.random.Generator
) -> np.ndarray:
    """Apply lighting (gain, offset, gradient, hot spot) and sensor noise; return uint8."""
    h, w = img.shape
    tile = _noise_tile(h, w)
    oy, ox = int(noise_rng.integers(0, h // 2 + 1)), int(noise_rng.integers(0, w // 2 + 1))
    out = img.astype(np.float32)
    if lighting:
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
    scene = _Scene(
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
    sx, sy = _polar(scene.cx, scene.cy, 4 * scene.px, scene.light + math.pi)
    _disc(img, sx, sy, scene.radius + scene.px, background - 18)
    kind = spec.defect(view)
    defect_rng = stream(_STREAM_DEFECT)

    def on_surface(holes: list[tuple[float, float, float]]) -> None:
        if kind == "scratch":
            _draw_scratch(img, scene, defect_rng, holes)
        elif kind == "dent":
            _draw_dent(img, scene, defect_rng, holes)

    draw = _draw_front if view == "front" else _draw_back
    draw(img, scene, geo, on_surface)
    if kind == "chip":
        _draw_chip(img, scene, defect_rng)
    if dust:
        _draw_dust(img, scene, stream(_STREAM_DUST))
    out = _finish(img, lighting, stream(_STREAM_LIGHT), stream(_STREAM_NOISE))
    if channels == 3:
        out = cv2.LUT(cv2.cvtColor(out, cv2.COLOR_GRAY2BGR), _tint_lut())
    return out
