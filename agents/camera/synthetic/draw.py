"""Drawing the part itself: sub-pixel OpenCV helpers, the scene geometry and the two sides."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["AA", "ONE", "SHIFT", "Scene", "SurfaceHook", "disc", "draw_back", "draw_front",
           "lit_step", "polar", "ring", "subpx", "subpx_len"]

SHIFT = 4  # fractional bits for OpenCV drawing calls (sub-pixel positions)
ONE = 1 << SHIFT
AA = cv2.LINE_AA


# --------------------------------------------------------------------------------------------
# drawing helpers


def subpx(x: float, y: float) -> tuple[int, int]:
    """Sub-pixel point for OpenCV calls that take ``shift=SHIFT``."""
    return (round(x * ONE), round(y * ONE))


def subpx_len(radius: float) -> int:
    """Sub-pixel radius for OpenCV calls that take ``shift=SHIFT``."""
    return max(1, round(radius * ONE))


def disc(img: np.ndarray, cx: float, cy: float, radius: float, value: float) -> None:
    """Filled anti-aliased disc."""
    cv2.circle(img, subpx(cx, cy), subpx_len(radius), int(value), -1, AA, SHIFT)


def ring(img: np.ndarray, cx: float, cy: float, radius: float, value: float, width: int) -> None:
    """Anti-aliased circle outline."""
    cv2.circle(img, subpx(cx, cy), subpx_len(radius), int(value), width, AA, SHIFT)


def lit_step(
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
    centre, axes = subpx(cx, cy), (subpx_len(radius), subpx_len(radius))
    cv2.ellipse(img, centre, axes, light_deg, -90, 90, int(bright), width, AA, SHIFT)
    cv2.ellipse(img, centre, axes, light_deg, 90, 270, int(dark), width, AA, SHIFT)


def polar(cx: float, cy: float, radius: float, angle: float) -> tuple[float, float]:
    """Point at ``radius`` and ``angle`` (radians, image coordinates) from the centre."""
    return cx + radius * math.cos(angle), cy + radius * math.sin(angle)


SurfaceHook = Callable[[list[tuple[float, float, float]]], None]


@dataclass
class Scene:
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


def draw_front(
    img: np.ndarray, sc: Scene, geo: np.random.Generator, on_surface: SurfaceHook
) -> None:
    """Flange with a raised hub, a countersunk bore and six through bolt holes.

    ``on_surface`` is called with the holes (x, y, radius) once the surface is drawn and before
    the holes are cut, so that surface defects lie under them.
    """
    cx, cy, r, m = sc.cx, sc.cy, sc.radius, sc.metal
    light_deg = math.degrees(sc.light)
    w1 = max(1, round(sc.px))
    hub = r * geo.uniform(0.55, 0.6)
    hole_r, pitch = r * 0.075, r * geo.uniform(0.77, 0.8)
    centres = [polar(cx, cy, pitch, sc.theta + k * math.pi / 3) for k in range(6)]
    bore = r * 0.25
    holes = [(hx, hy, hole_r * 1.4) for hx, hy in centres] + [(cx, cy, bore * 1.22)]

    disc(img, cx, cy, r, m)
    ring(img, cx, cy, r - 1.5 * sc.px, m + 30, max(1, round(2 * sc.px)))  # outer chamfer
    # turned face: faint concentric tool marks
    for k, rr in enumerate(np.arange(0.62, 0.97, 0.045) * r):
        ring(img, cx, cy, float(rr), m + (4 if k % 2 else -4), w1)
    disc(img, cx, cy, hub, m + 12)
    lit_step(img, cx, cy, hub, light_deg, m + 50, m - 45, w1)
    for rr in np.arange(0.32, 0.95, 0.08) * hub:
        ring(img, cx, cy, float(rr), m + 17, w1)
    on_surface(holes)
    for hx, hy in centres:
        disc(img, hx, hy, hole_r * 1.4, m + 25)  # countersink
        disc(img, hx, hy, hole_r, sc.background - 15)
    disc(img, cx, cy, bore * 1.22, m + 35)
    disc(img, cx, cy, bore, sc.background - 20)


def draw_back(
    img: np.ndarray, sc: Scene, geo: np.random.Generator, on_surface: SurfaceHook
) -> None:
    """Back face: lathe marks, O-ring groove, keyed bore, blind dowel holes, matrix code.

    ``on_surface`` is called with the holes and marks (x, y, radius) once the turned surface and
    the O-ring groove are drawn and before holes, code and bore are cut: a scratch or dent made
    after machining marks the groove as well, it is not hidden under it.
    """
    cx, cy, r, m = sc.cx, sc.cy, sc.radius, sc.metal
    light_deg = math.degrees(sc.light)
    w1 = max(1, round(sc.px))
    groove, gw = r * geo.uniform(0.68, 0.72), r * 0.05
    dowels = [polar(cx, cy, r * 0.5, sc.theta + a * math.pi / 2) for a in (1, 3)]
    cell, n = r * 0.022, 8
    mx, my = polar(cx, cy, r * 0.855, sc.theta + math.pi / 4)
    bits = geo.random((n, n)) < 0.5
    bore = r * 0.25
    holes = [(cx, cy, bore * 1.5), (mx, my, cell * n * 0.75)]
    holes += [(hx, hy, r * 0.07) for hx, hy in dowels]

    disc(img, cx, cy, r, m)
    ring(img, cx, cy, r - 1.5 * sc.px, m + 25, max(1, round(2 * sc.px)))
    for k, rr in enumerate(np.arange(0.3, 0.97, 0.035) * r):
        ring(img, cx, cy, float(rr), m + (7 if k % 3 else -7), w1)
    ring(img, cx, cy, groove, m - 38, max(1, round(gw)))
    lit_step(img, cx, cy, groove - gw / 2, light_deg + 180, m + 35, m - 55, w1)
    lit_step(img, cx, cy, groove + gw / 2, light_deg, m + 35, m - 55, w1)
    on_surface(holes)
    for hx, hy in dowels:
        disc(img, hx, hy, r * 0.05, m - 60)
        lit_step(img, hx, hy, r * 0.05, light_deg + 180, m + 30, m - 70, w1)
    # laser-etched 8x8 matrix code between the groove and the rim, rotating with the part
    bits[:, 0] = bits[-1, :] = True  # the "L" finder pattern
    iy, ix = np.nonzero(bits)
    c, s = math.cos(sc.theta), math.sin(sc.theta)
    corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
    u = (ix[:, None] + corners[None, :, 0] - n / 2) * cell
    v = (iy[:, None] + corners[None, :, 1] - n / 2) * cell
    pts = np.stack([mx + u * c - v * s, my + u * s + v * c], axis=-1)
    cv2.fillPoly(img, list(np.round(pts * ONE).astype(np.int32)), int(m - 65), AA, SHIFT)
    disc(img, cx, cy, bore * 1.15, m + 30)
    disc(img, cx, cy, bore, sc.background - 20)
    kx, ky = polar(cx, cy, bore, sc.theta)
    key = cv2.boxPoints(((kx, ky), (bore * 0.5, bore * 0.45), math.degrees(sc.theta)))
    cv2.fillConvexPoly(img, np.round(key * ONE).astype(np.int32), sc.background - 20, AA, SHIFT)
