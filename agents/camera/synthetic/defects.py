"""Defects (scratch, dent, chip) and harmless dust, drawn onto a part's surface."""

from __future__ import annotations

import math

import cv2
import numpy as np
from procgraph.agents.camera.synthetic.draw import AA, ONE, SHIFT, Scene, disc, polar, subpx

__all__ = ["draw_chip", "draw_dent", "draw_dust", "draw_scratch"]


# --------------------------------------------------------------------------------------------
# defects


def _surface_point(
    sc: Scene, rng: np.random.Generator, holes: list[tuple[float, float, float]], margin: float
) -> tuple[float, float]:
    """A random point on bare metal, at least ``margin`` away from holes and the rim."""
    x = y = 0.0
    for _ in range(30):
        rad = sc.radius * math.sqrt(rng.uniform(0.12, 0.85**2))
        x, y = polar(sc.cx, sc.cy, rad, rng.uniform(0, 2 * math.pi))
        if rad + margin < sc.radius * 0.97 and all(
            math.hypot(x - hx, y - hy) > hr + margin for hx, hy, hr in holes
        ):
            break
    return x, y


def _scratch_path(
    sc: Scene, rng: np.random.Generator, length: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """A candidate scratch: 9 points along a gently curved line; also returns its heading."""
    rad = sc.radius * math.sqrt(rng.uniform(0.1, 0.5))
    x0, y0 = polar(sc.cx, sc.cy, rad, rng.uniform(0, 2 * math.pi))
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
    sc: Scene, xs: np.ndarray, ys: np.ndarray, holes: list[tuple[float, float, float]]
) -> float:
    """Fraction of a polyline (densely resampled) that lies on metal, off holes and rim."""
    t = np.linspace(0, len(xs) - 1, 8 * (len(xs) - 1) + 1)
    px, py = np.interp(t, np.arange(len(xs)), xs), np.interp(t, np.arange(len(ys)), ys)
    ok = np.hypot(px - sc.cx, py - sc.cy) < sc.radius * 0.93
    for hx, hy, hr in holes:
        ok &= np.hypot(px - hx, py - hy) > hr + 1.5 * sc.px
    return float(ok.mean())


def draw_scratch(
    img: np.ndarray, sc: Scene, rng: np.random.Generator, holes: list[tuple[float, float, float]]
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
    pts = np.round(np.stack([xs, ys], -1) * ONE).astype(np.int32)
    sign = 1 if rng.random() < 0.5 else -1
    value = int(np.clip(sc.metal + sign * rng.uniform(70, 100), 0, 255))
    width = max(1, round(sc.px * rng.uniform(1.5, 2.5)))
    cv2.polylines(img, [pts], False, value, width, AA, SHIFT)
    # the lip thrown up beside the groove catches the light: a fainter companion line
    off = subpx(math.cos(heading + math.pi / 2) * sc.px, math.sin(heading + math.pi / 2) * sc.px)
    lip = int(np.clip(sc.metal - sign * 25, 0, 255))
    cv2.polylines(img, [pts + np.array(off, np.int32)], False, lip, 1, AA, SHIFT)


def draw_dent(
    img: np.ndarray, sc: Scene, rng: np.random.Generator, holes: list[tuple[float, float, float]]
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


def draw_chip(img: np.ndarray, sc: Scene, rng: np.random.Generator) -> None:
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
    poly = np.round(np.concatenate([inner, outer]) * ONE).astype(np.int32)
    cv2.fillPoly(img, [poly], sc.background, AA, SHIFT)
    face = np.round(inner[1:-1] * ONE).astype(np.int32)
    bright = int(np.clip(sc.metal + rng.uniform(40, 70), 0, 255))
    cv2.polylines(img, [face], False, bright, max(1, round(sc.px * 1.5)), AA, SHIFT)


# --------------------------------------------------------------------------------------------
# dust, lighting, noise


def draw_dust(img: np.ndarray, sc: Scene, rng: np.random.Generator) -> None:
    """Soft dark and light specks and short curled fibres; none of them is a defect."""
    dark = np.zeros_like(img)
    light = np.zeros_like(img)
    h, w, px = sc.height, sc.width, sc.px
    for _ in range(int(rng.integers(2, 14))):
        # most dust lands on or near the part (it is what the camera looks at)
        x, y = polar(sc.cx, sc.cy, sc.radius * 1.2 * math.sqrt(rng.random()), rng.uniform(0, 7))
        layer = dark if rng.random() < 0.7 else light
        disc(layer, x, y, px * rng.uniform(0.6, 2.4), rng.uniform(25, 90))
    for _ in range(int(rng.integers(0, 3))):
        x, y = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
        seg = px * rng.uniform(2.0, 4.5)
        heading = rng.uniform(0, 2 * math.pi)
        turns = np.cumsum(rng.normal(0, 0.6, 7))
        xs = x + np.concatenate([[0.0], np.cumsum(np.cos(heading + turns) * seg)])
        ys = y + np.concatenate([[0.0], np.cumsum(np.sin(heading + turns) * seg)])
        pts = np.round(np.stack([xs, ys], -1) * ONE).astype(np.int32)
        layer = dark if rng.random() < 0.75 else light
        cv2.polylines(layer, [pts], False, int(rng.uniform(30, 70)), max(1, round(px)), AA, SHIFT)
    k = 2 * max(1, round(px)) + 1
    sigma = 0.7 * px
    cv2.subtract(img, cv2.GaussianBlur(dark, (k, k), sigma), dst=img)
    cv2.add(img, cv2.GaussianBlur(light, (k, k), sigma), dst=img)
