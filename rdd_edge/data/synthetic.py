"""Synthetic street scenes: the embedded default data set (no files, deterministic by seed).

Each scene is a street seen from a car in perspective: sky, buildings with windows, a road with
lane markings, pavements, street trees, poles with signs, fences, cars, pedestrians and
bicyclists, labelled with the CamVid 11 classes. Objects are placed in metres on a ground plane
and projected with a pinhole camera, so size follows distance and thin things (poles, limbs,
bicycle wheels) are 1-3 px wide at 96x144. Classes share colour ranges (grey road, grey
buildings, grey poles, grey cars ...) so a network has to use shape and context; texture noise,
lighting, white balance, cast shadows and a little boundary label noise keep it from being
trivial. NumPy + OpenCV only (never torch): about 10 ms per 96x144 scene, 20-35 ms at 360x480.

Items are ``(image uint8 HxWx3 RGB, label uint8 HxW)`` with values 0..10 and 255 (ignore).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rdd_edge.data.base import IGNORE_INDEX, DatasetInfo, TrainRecipe, write_image, write_label
# The scenes use the CamVid 11 classes in CamVid order, with SegNet's camvid11 palette, so the
# same colours and class ids serve both data sets (defined once, in camvid).
from rdd_edge.data.camvid import CLASSES, PALETTE
from rdd_edge.errors import ConfigError, DataError
from rdd_edge.runs import write_json

SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)

DEFAULT_SIZE = (96, 144)  # (H, W); multiples of 48 so PSPNet's pooling bins export cleanly
DEFAULT_N = {"train": 500, "val": 100}
_SPLIT_KEYS = {"train": 0, "val": 1}

SYNTHETIC_INFO = DatasetInfo(
    name="synthetic",
    classes=CLASSES,
    palette=PALETTE,
    eval_size=DEFAULT_SIZE,
    crop_size=DEFAULT_SIZE,
    # small enough for a CPU; lr 0.05 learns faster than the paper's 0.02 from scratch on a short schedule
    # (pipeline MBV2 student, 200 its: 19.3 -> 23.0 mIoU; R18 teacher 33.0 -> 33.6; benchmarks/RESULTS.md)
    recipe=TrainRecipe(iters=300, batch=8, val_every=100, log_every=10, lr=0.05),
)

_SHIFT = 3  # OpenCV sub-pixel bits for polygon / line coordinates
_ONE = 1 << _SHIFT
# Texture noise amplitude per class (grey levels), applied after drawing.
_TEXTURE = np.zeros(256, np.float32)
_TEXTURE[:11] = [3, 7, 5, 7, 8, 16, 4, 8, 5, 8, 8]


# ----------------------------------------------------------------------------- colours


def _col(rng: np.random.Generator, base, jitter: float = 12.0) -> tuple[float, float, float]:
    """``base`` RGB with a shared brightness shift and a small per-channel jitter."""
    n = rng.standard_normal(4).tolist()
    shift = n[0] * jitter * 0.8
    return tuple(min(255.0, max(0.0, b + shift + e * jitter * 0.35)) for b, e in zip(base, n[1:]))


def _grey(rng: np.random.Generator, lo: float, hi: float, tint: float = 8.0) -> tuple[float, float, float]:
    g = rng.uniform(lo, hi)
    return _col(rng, (g, g, g), tint)


def _scale(c, k: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, v * k)) for v in c)


_FACADES = [  # (weight, base RGB): greys overlap road/poles/cars; brick, stone, painted
    (3, (120, 120, 120)), (2, (165, 160, 150)), (2, (150, 90, 70)), (2, (190, 175, 145)),
    (1, (210, 210, 205)), (1, (85, 85, 90)), (1, (150, 150, 120)), (1, (110, 130, 150)),
    (1, (120, 140, 110)),
]  # fmt: skip
_CAR_COLOURS = [
    (3, (200, 200, 205)), (3, (125, 125, 130)), (3, (35, 35, 40)), (2, (150, 30, 30)),
    (2, (40, 60, 130)), (1, (40, 90, 60)), (1, (220, 215, 200)), (1, (170, 140, 90)),
    (1, (100, 40, 110)), (1, (90, 90, 80)),
]  # fmt: skip
_CLOTHES = [(50, 50, 55), (30, 30, 35), (60, 70, 110), (120, 40, 40), (140, 140, 140),
            (200, 200, 195), (90, 70, 50), (40, 80, 60), (170, 120, 60), (80, 60, 100)]  # fmt: skip


def _pick(rng: np.random.Generator, table) -> tuple:
    """A weighted choice from ``[(weight, value), ...]``."""
    total = sum(t[0] for t in table)
    x = rng.random() * total
    for w, v in table:
        x -= w
        if x < 0:
            return v
    return table[-1][1]


# ----------------------------------------------------------------------------- drawing


class _Canvas:
    """Image + label drawn together; a pinhole camera maps metres to pixels.

    World: X right, Y up (height above the ground), Z forward; the camera is at X = 0, height
    ``h``, looking along Z with the horizon at row ``vy``.
    """

    def __init__(self, size: tuple[int, int], f: float, vx: float, vy: float, h: float):
        self.H, self.W = size
        self.img = np.zeros((self.H, self.W, 3), np.uint8)
        self.lbl = np.zeros((self.H, self.W), np.uint8)
        self.f, self.vx, self.vy, self.h = f, vx, vy, h

    def proj(self, X, Y, Z) -> np.ndarray:
        """(..., 2) float pixel coordinates of world points (broadcast)."""
        if isinstance(X, (float, int)) and isinstance(Y, (float, int)) and isinstance(Z, (float, int)):  # fast path
            z = Z if Z > 0.25 else 0.25
            return np.array((self.vx + self.f * X / z, self.vy + self.f * (self.h - Y) / z))
        inv = self.f / np.maximum(np.asarray(Z, np.float64), 0.25)
        X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
        x = self.vx + X * inv + 0.0 * Y  # the zero terms broadcast x and y to one shape
        y = self.vy + (self.h - Y) * inv + 0.0 * X
        out = np.empty(x.shape + (2,))
        out[..., 0] = x
        out[..., 1] = y
        return out

    def scale(self, Z: float) -> float:
        """Pixels per metre at depth ``Z``."""
        return self.f / max(Z, 0.25)

    @staticmethod
    def _fix(pts) -> np.ndarray:
        # depths are >= 0.25 m, so coordinates stay far inside int32 even with the sub-pixel shift
        return np.rint(np.asarray(pts, np.float64) * _ONE).astype(np.int32)

    def polys(self, polys, color, cls: int | None) -> None:
        """Fill polygons (list of (k, 2) pixel arrays) in the image (anti-aliased) and the label."""
        if isinstance(polys, np.ndarray):  # (n, k, 2): fix all at once
            fixed = self._fix(polys)
            ps = [fixed[i].reshape(-1, 1, 2) for i in range(len(fixed))]
        else:
            ps = [self._fix(p).reshape(-1, 1, 2) for p in polys]
        if not ps:
            return
        cv2.fillPoly(self.img, ps, color, cv2.LINE_AA, _SHIFT)
        if cls is not None:
            cv2.fillPoly(self.lbl, ps, int(cls), cv2.LINE_8, _SHIFT)

    def poly(self, pts, color, cls: int | None) -> None:
        self.polys([pts], color, cls)

    @staticmethod
    def _pt(p) -> tuple[int, int]:
        return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))

    def line(self, p1, p2, color, width_px: float, cls: int | None) -> None:
        t = max(1, int(round(width_px)))
        a, b = self._pt(p1), self._pt(p2)
        cv2.line(self.img, a, b, color, t, cv2.LINE_AA, _SHIFT)
        if cls is not None:
            cv2.line(self.lbl, a, b, int(cls), t, cv2.LINE_8, _SHIFT)

    def ellipse(self, c, axes, color, cls: int | None, thickness_px: float = -1, angle: float = 0.0) -> None:
        t = -1 if thickness_px < 0 else max(1, int(round(thickness_px)))
        cc = self._pt(c)
        ax = self._pt((max(float(axes[0]), 0.5), max(float(axes[1]), 0.5)))
        cv2.ellipse(self.img, cc, ax, angle, 0, 360, color, t, cv2.LINE_AA, _SHIFT)
        if cls is not None:
            cv2.ellipse(self.lbl, cc, ax, angle, 0, 360, int(cls), t, cv2.LINE_8, _SHIFT)

    def darken(self, pts, k: float, only: tuple[int, ...]) -> None:
        """Multiply the image by ``k`` inside a polygon, on pixels of the given classes only."""
        p = np.asarray(pts, np.float64)
        x0, y0 = np.maximum(np.floor(p.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(p.max(0)).astype(int) + 1, (self.W, self.H))
        if x1 <= x0 or y1 <= y0:
            return
        m = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(m, [self._fix(p - (x0, y0)).reshape(-1, 1, 2)], 1, cv2.LINE_8, _SHIFT)
        sel = m.astype(bool) & np.isin(self.lbl[y0:y1, x0:x1], only)
        if sel.any():
            roi = self.img[y0:y1, x0:x1]
            roi[sel] = (roi[sel] * k).astype(np.uint8)


# ----------------------------------------------------------------------------- the scene


class _Street:
    """One random street layout (in metres), drawn onto a :class:`_Canvas`."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int]):
        H, W = size
        self.rng = r = rng
        f = W * r.uniform(0.7, 0.95)
        self.c = _Canvas(size, f, W * r.uniform(0.35, 0.65), H * r.uniform(0.36, 0.5), r.uniform(1.2, 1.8))
        self.road_w = r.uniform(6.0, 13.0)
        self.xl = -r.uniform(1.2, self.road_w - 1.2)  # left kerb; camera drives inside the road
        self.xr = self.xl + self.road_w
        self.pave_l, self.pave_r = r.uniform(1.5, 4.5), r.uniform(1.5, 4.5)
        self.fl, self.fr = self.xl - self.pave_l, self.xr + self.pave_r  # facade lines
        self.z_end = r.uniform(35.0, 160.0) if r.random() < 0.6 else 400.0
        self.overcast = r.random() < 0.4

    # -- background ------------------------------------------------------------------
    def sky(self) -> None:
        c, r = self.c, self.rng
        if self.overcast:
            top, bottom = _grey(r, 170, 225, 6), _grey(r, 195, 240, 5)
        else:
            top = _col(r, (95, 140, 205), 15)
            bottom = _col(r, (185, 205, 225), 12)
        # smooth, so drawn at a quarter of the size and scaled up
        h, w = max(4, c.H // 4), max(4, c.W // 4)
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None] ** 0.8
        grad = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
        # clouds: smooth random field, thresholded softly, blended towards white
        gh, gw = 4 + int(r.integers(0, 4)), 6 + int(r.integers(0, 6))
        field = cv2.resize(r.random((gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        amount = r.uniform(0.0, 0.8)
        cloud = np.clip((field - (1 - amount)) * 3.0, 0, 1)[..., None]
        small = grad * (1 - cloud) + np.float32(r.uniform(215, 250)) * cloud
        c.img[:] = cv2.resize(np.clip(small, 0, 255).astype(np.uint8), (c.W, c.H), interpolation=cv2.INTER_LINEAR)
        c.lbl[:] = SKY

    def skyline(self) -> None:
        """Distant buildings / tree line near the horizon, seen through the street's end."""
        c, r = self.c, self.rng
        Z = 250.0
        x = -150.0
        haze = r.uniform(0.55, 0.85)
        while x < 150.0:
            w = r.uniform(8, 35)
            if r.random() < 0.35:
                cx, hgt = x + w / 2, r.uniform(6, 14)
                col = _col(r, (70, 95, 60), 10)
                col = tuple(v * haze + 190 * (1 - haze) for v in col)
                for _ in range(3):
                    c.ellipse(c.proj(cx + r.uniform(-w / 3, w / 3), hgt * 0.5, Z)[0:2], (c.scale(Z) * w / 2.5, c.scale(Z) * hgt * 0.6), col, TREE)
            else:
                hgt = r.uniform(8, 45)
                col = tuple(v * haze + 185 * (1 - haze) for v in _pick(r, _FACADES))
                c.poly(c.proj([x, x + w, x + w, x], [0, 0, hgt, hgt], Z), col, BUILDING)
            x += w

    # -- ground ----------------------------------------------------------------------
    def ground(self) -> None:
        c, r = self.c, self.rng
        zn, zf = 0.3, 400.0
        road = _grey(r, 70, 125, 5)
        self.road_col = road
        c.poly(c.proj([self.xl, self.xr, self.xr, self.xl], 0, [zn, zn, zf, zf]), road, ROAD)
        # asphalt patches (repairs, wet areas): same class, other shade
        for _ in range(int(r.integers(0, 4))):
            x0 = r.uniform(self.xl, self.xr - 1)
            z0 = r.uniform(3, 40)
            w, l = r.uniform(1, 3), r.uniform(2, 10)
            x1 = min(x0 + w, self.xr)
            c.poly(c.proj([x0, x1, x1, x0], 0, [z0, z0, z0 + l, z0 + l]), _scale(road, r.uniform(0.8, 1.15)), ROAD)
        pave = _col(r, _pick(r, [(3, (140, 138, 132)), (1, (165, 150, 130)), (1, (110, 110, 112)), (1, (150, 120, 110))]), 10)
        kerb = _scale(pave, r.uniform(1.05, 1.3))
        far = 60.0
        for edge, outer, side in ((self.xl, self.fl, -1), (self.xr, self.fr, 1)):
            o = outer + side * far
            c.poly(c.proj([edge, o, o, edge], 0, [zn, zn, zf, zf]), pave, PAVEMENT)
            k = edge + side * 0.22
            c.poly(c.proj([edge, k, k, edge], [0.12, 0.12, 0.12, 0.12], [zn, zn, zf, zf]), kerb, PAVEMENT)
            # paving slab joints: thin darker lines across the pavement
            if r.random() < 0.6:
                step = r.uniform(1.0, 2.5)
                for z in np.arange(r.uniform(1, 3), 30, step):
                    p = c.proj([edge, outer], 0, z)
                    c.line(p[0], p[1], _scale(pave, 0.82), 1, None)
        self.markings()

    def markings(self) -> None:
        c, r = self.c, self.rng
        paint = _col(r, (225, 225, 215), 8) if r.random() < 0.8 else _col(r, (215, 190, 60), 8)
        wear = r.uniform(0.75, 1.0)
        paint = tuple(v * wear + rv * (1 - wear) for v, rv in zip(paint, self.road_col))
        lw = r.uniform(0.1, 0.18)
        # centre line (dashed) and sometimes lane lines / edge lines
        lines = [self.xl + self.road_w * 0.5]
        if self.road_w > 9 and r.random() < 0.6:
            lines = [self.xl + self.road_w * q for q in (0.33, 0.66)]
        dash, gap = r.uniform(2, 4), r.uniform(3, 7)
        off = r.uniform(0, dash + gap)
        for x in lines:
            if r.random() < 0.85:
                zs = np.arange(off, 120, dash + gap)
                polys = [c.proj([x - lw, x + lw, x + lw, x - lw], 0, [z, z, z + dash, z + dash]) for z in zs]
                c.polys(polys, paint, ROAD)
        if r.random() < 0.5:
            for x in (self.xl + 0.4, self.xr - 0.4):
                c.poly(c.proj([x - lw / 2, x + lw / 2, x + lw / 2, x - lw / 2], 0, [0.3, 0.3, 300, 300]), paint, ROAD)
        if r.random() < 0.25:  # zebra crossing
            z0 = r.uniform(6, 25)
            xs = np.arange(self.xl + 0.3, self.xr - 0.5, 1.0)
            polys = [c.proj([x, x + 0.5, x + 0.5, x], 0, [z0, z0, z0 + 3, z0 + 3]) for x in xs]
            c.polys(polys, paint, ROAD)

    # -- buildings -------------------------------------------------------------------
    def plan_buildings(self) -> tuple[list[tuple], list[tuple]]:
        """Both facades as segments along Z, far first: ``(segments, gaps (z0, z1, x, side))``."""
        r = self.rng
        gaps = []
        segs = []
        for fx, side in ((self.fl, -1), (self.fr, 1)):
            if r.random() < 0.12:  # an open side: park or square, trees behind
                gaps.append((2.0, self.z_end, fx, side))
                continue
            z = r.uniform(-3, 2)
            while z < min(self.z_end, 180):
                length = r.uniform(6, 24)
                if r.random() < 0.15:
                    gaps.append((z, z + length * 0.6, fx, side))
                    z += length * 0.6
                    continue
                setback = r.uniform(0, 2.5) if r.random() < 0.25 else 0.0
                segs.append((z, min(z + length, self.z_end), fx + side * setback, side, r.uniform(5, 26)))
                z += length
        # far end of the street: a facade across it, else the skyline shows
        if self.z_end < 399 and r.random() < 0.75:
            segs.append((self.z_end, self.z_end, 0.0, 0, r.uniform(6, 30)))
        segs.sort(key=lambda s: -s[0])
        return segs, gaps

    def facade(self, z0: float, z1: float, x: float, side: int, hgt: float) -> None:
        c, r = self.c, self.rng
        base = _col(r, _pick(r, _FACADES), 14)
        if side == 0:  # across the street at the end
            xa, xb = self.fl - 5, self.fr + 5
            c.poly(c.proj([xa, xb, xb, xa], [0, 0, hgt, hgt], z0), base, BUILDING)
            u0, u1 = xa, xb

            def wpt(u, v):
                return c.proj(u, v, z0)
        else:
            z0c = max(z0, 0.3)
            c.poly(c.proj(x, [0, 0, hgt, hgt], [z0c, z1, z1, z0c]), base, BUILDING)
            u0, u1 = z0c, z1

            def wpt(u, v):
                return c.proj(x, v, u)

        # roof edge / cornice
        if r.random() < 0.5:
            cor = _scale(base, r.uniform(0.6, 1.25))
            c.poly(np.stack([wpt(u0, hgt), wpt(u1, hgt), wpt(u1, hgt - 0.5), wpt(u0, hgt - 0.5)]), cor, BUILDING)
        # windows on a grid of floors and bays
        floor_h, bay = r.uniform(2.8, 3.6), r.uniform(1.8, 3.8)
        ww, wh = bay * r.uniform(0.35, 0.7), floor_h * r.uniform(0.35, 0.6)
        glass = _grey(r, 25, 80, 10) if r.random() < 0.7 else _col(r, (110, 130, 160), 15)
        frame = r.random() < 0.4
        ground_shop = r.random() < 0.5
        vs = np.arange(floor_h * (1.3 if ground_shop else 0.4), hgt - floor_h * 0.6, floor_h)
        us = np.arange(u0 + bay * 0.3, u1 - ww, bay)
        if len(vs) and len(us):
            uu, vv = np.meshgrid(us, vs)
            uu, vv = uu.ravel()[:, None], vv.ravel()[:, None]
            corners = wpt(uu + np.array([0, ww, ww, 0]), vv + np.array([0, 0, wh, wh]))  # (n, 4, 2)
            lit = r.random(len(corners)) < 0.12  # a few lit / curtained windows
            # windows under ~half a pixel or off the image add nothing: skip drawing them
            lo, hi = corners.min(1), corners.max(1)
            keep = ((hi - lo).max(1) > 0.5) & (hi[:, 0] > 0) & (lo[:, 0] < c.W) & (hi[:, 1] > 0) & (lo[:, 1] < c.H)
            corners, lit = corners[keep], lit[keep]
            if frame:
                mid = corners.mean(1, keepdims=True)
                c.polys((corners - mid) * 1.25 + mid, _scale(base, 1.25), BUILDING)
            c.polys(corners, glass, BUILDING)
            c.polys(corners[lit], _col(r, (190, 170, 120), 20), BUILDING)
        if ground_shop:  # shop front: dark glass band, sometimes an awning colour
            c.poly(np.stack([wpt(u0, 0.3), wpt(u1, 0.3), wpt(u1, 2.6), wpt(u0, 2.6)]), _grey(r, 20, 70, 10), BUILDING)
            if r.random() < 0.5:
                aw = _col(r, _pick(r, [(1, (160, 40, 40)), (1, (40, 90, 60)), (1, (60, 60, 120)), (1, (200, 190, 170))]), 15)
                c.poly(np.stack([wpt(u0, 2.7), wpt(u1, 2.7), wpt(u1, 3.3), wpt(u0, 3.3)]), aw, BUILDING)

    # -- objects -----------------------------------------------------------------------
    def tree(self, X: float, Z: float) -> None:
        c, r = self.c, self.rng
        s = c.scale(Z)
        trunk_h, crown = r.uniform(1.8, 3.5), r.uniform(1.2, 3.0)
        trunk = _col(r, (85, 70, 55), 12)
        c.line(c.proj(X, 0, Z), c.proj(X, trunk_h + crown * 0.6, Z), trunk, 0.25 * s, TREE)
        bare = r.random() < 0.15
        if bare:  # winter tree: branches only, the sky shows through (labelled by what is drawn)
            for _ in range(int(r.integers(6, 12))):
                a = r.uniform(-1.2, 1.2)
                y0 = trunk_h + r.uniform(0, crown)
                ln = r.uniform(0.8, 2.2) * crown / 2
                c.line(c.proj(X, y0, Z), c.proj(X + np.sin(a) * ln, y0 + np.cos(a) * ln, Z), trunk, 0.1 * s, TREE)
            return
        green = _col(r, _pick(r, [(3, (70, 105, 50)), (2, (95, 120, 60)), (1, (55, 80, 45)), (1, (120, 125, 70))]), 12)
        cy = trunk_h + crown
        n = int(r.integers(10, 22))
        a, d = r.uniform(0, 2 * np.pi, n), r.uniform(0, 0.75, n) * crown
        rad = crown * r.uniform(0.3, 0.6, n) * s
        squash = r.uniform(0.8, 1.1, n)
        shade = r.uniform(0.75, 1.2, n)
        centres = c.proj(X + np.cos(a) * d, cy + np.sin(a) * d * 0.9, Z)
        for i in range(n):
            c.ellipse(centres[i], (rad[i], rad[i] * squash[i]), _scale(green, shade[i]), TREE)

    def pole(self, X: float, Z: float) -> None:
        c, r = self.c, self.rng
        s = c.scale(Z)
        kind = _pick(r, [(0.45, 0), (0.3, 1), (0.25, 2)])  # 0 sign pole, 1 lamp post, 2 traffic light
        hgt = r.uniform(2.8, 3.8) if kind == 0 else r.uniform(5, 9) if kind == 1 else r.uniform(3.5, 5)
        col = _grey(r, 60, 160, 10) if r.random() < 0.8 else _col(r, (40, 70, 50), 8)
        c.line(c.proj(X, 0, Z), c.proj(X, hgt, Z), col, r.uniform(0.1, 0.22) * s, POLE)
        if kind == 1:  # lamp arm reaching over the road
            toward = 1 if X < 0 else -1
            arm = r.uniform(0.8, 2.0)
            c.line(c.proj(X, hgt, Z), c.proj(X + toward * arm, hgt + 0.2, Z), col, 0.08 * s, POLE)
            c.ellipse(c.proj(X + toward * arm, hgt + 0.1, Z), (0.3 * s, 0.1 * s), _grey(r, 150, 230), POLE)
        elif kind == 2:  # traffic light housing
            box = _grey(r, 20, 60, 5)
            y0 = hgt - 1.0
            c.poly(c.proj([X - 0.17, X + 0.17, X + 0.17, X - 0.17], [y0, y0, hgt, hgt], Z), box, SIGN)
            lit = int(r.integers(0, 3))
            for k, lc in enumerate(((230, 50, 40), (230, 170, 40), (60, 210, 90))):
                cc = lc if k == lit else _scale(lc, 0.3)
                c.ellipse(c.proj(X, hgt - 0.2 - k * 0.3, Z), (0.09 * s, 0.09 * s), cc, SIGN)
        if kind == 0 or r.random() < 0.3:
            self.sign(X, r.uniform(1.9, hgt - 0.3) if kind != 0 else hgt - 0.35, Z)

    def sign(self, X: float, Y: float, Z: float) -> None:
        c, r = self.c, self.rng
        s = c.scale(Z)
        size = r.uniform(0.45, 0.8)
        col = _col(r, _pick(r, [(3, (200, 40, 40)), (3, (40, 80, 170)), (2, (230, 230, 225)), (1, (230, 190, 40)), (1, (40, 120, 70))]), 12)
        shape = int(r.integers(0, 3))
        if shape == 0:
            c.ellipse(c.proj(X, Y, Z), (size / 2 * s, size / 2 * s), col, SIGN)
            if r.random() < 0.6:
                c.ellipse(c.proj(X, Y, Z), (size / 3 * s, size / 3 * s), _grey(r, 210, 245), SIGN)
        elif shape == 1:
            w = size * r.uniform(0.8, 1.6)
            c.poly(c.proj([X - w / 2, X + w / 2, X + w / 2, X - w / 2], [Y - size / 2, Y - size / 2, Y + size / 2, Y + size / 2], Z), col, SIGN)
        else:
            c.poly(c.proj([X - size / 2, X + size / 2, X], [Y + size / 3, Y + size / 3, Y - size * 0.55], Z), col, SIGN)

    def fence(self, X: float, z0: float, z1: float) -> None:
        c, r = self.c, self.rng
        hgt = r.uniform(0.9, 1.6)
        kind = int(r.integers(0, 3))
        z0 = max(z0, 1.0)
        if kind == 0:  # solid boards
            col = _col(r, _pick(r, [(2, (130, 100, 70)), (1, (150, 150, 145)), (1, (90, 80, 70))]), 12)
            c.poly(c.proj(X, [0, 0, hgt, hgt], [z0, z1, z1, z0]), col, FENCE)
            for z in np.arange(z0, z1, r.uniform(0.15, 0.4)):
                c.line(c.proj(X, 0, z), c.proj(X, hgt, z), _scale(col, 0.75), 1, None)
        else:  # railings: rails and bars, the background shows through the gaps
            col = _grey(r, 30, 150, 8) if kind == 1 else _col(r, (40, 75, 55), 8)
            for y in (hgt, hgt * 0.15) if kind == 1 else (hgt, hgt * 0.5, hgt * 0.1):
                p = c.proj(X, y, [z0, z1])
                c.line(p[0], p[1], col, 0.06 * c.scale(z0), FENCE)
            step = r.uniform(0.12, 0.3) if kind == 1 else r.uniform(1.5, 2.5)
            for z in np.arange(z0, z1, step):
                c.line(c.proj(X, 0, z), c.proj(X, hgt, z), col, 0.05 * c.scale(z), FENCE)

    def car(self, X: float, Z: float, facing_away: bool) -> None:
        c, r = self.c, self.rng
        van = r.random() < 0.15
        w, l = r.uniform(1.65, 1.95), r.uniform(3.8, 4.9) if not van else r.uniform(4.5, 5.5)
        hgt = r.uniform(1.35, 1.6) if not van else r.uniform(1.9, 2.3)
        body = _col(r, _pick(r, _CAR_COLOURS), 10)
        glass = _grey(r, 20, 70, 8)
        dark = _grey(r, 10, 35, 3)
        x0, x1 = X - w / 2, X + w / 2
        belt = hgt * (0.6 if not van else 0.55)
        inset = 0.15 if not van else 0.03
        # shadow on the ground first
        c.darken(c.proj([x0 - 0.15, x1 + 0.15, x1 + 0.15, x0 - 0.15], 0, [Z - 0.2, Z - 0.2, Z + l, Z + l]), r.uniform(0.45, 0.7), (ROAD, PAVEMENT))
        # the side facing the camera, if any
        if x0 > 0.2 or x1 < -0.2:
            sx = x0 if x0 > 0 else x1
            c.poly(c.proj(sx, [0.25, 0.25, belt, belt], [Z, Z + l, Z + l, Z]), body, CAR)
            rz0, rz1 = Z + l * (0.25 if not van else 0.05), Z + l * 0.8
            sxi = sx + (inset if sx == x0 else -inset)
            c.poly(np.concatenate([c.proj(sx, belt, [Z + l * 0.1, Z + l * 0.95]), c.proj(sxi, hgt, [rz1, rz0])]), body, CAR)
            c.poly(np.concatenate([c.proj(sx, belt + 0.05, [Z + l * 0.2, Z + l * 0.85]), c.proj(sxi, hgt - 0.07, [rz1 - 0.1, rz0 + 0.1])]), glass, CAR)
            for wz in (Z + 0.8, Z + l - 0.8):
                p = c.proj(sx, 0.32, wz)
                c.ellipse(p, (0.22 * c.scale(wz), 0.32 * c.scale(wz)), dark, CAR)
        # near face (rear if facing away, else front)
        c.poly(c.proj([x0, x1, x1, x0], [0.2, 0.2, belt, belt], Z), body, CAR)
        c.poly(c.proj([x0, x1, x1 - inset, x0 + inset], [belt, belt, hgt, hgt], Z + (0.5 if not van else 0)), body, CAR)
        c.poly(c.proj([x0 + 0.1, x1 - 0.1, x1 - inset - 0.05, x0 + inset + 0.05], [belt + 0.05, belt + 0.05, hgt - 0.08, hgt - 0.08], Z + (0.45 if not van else 0)), glass, CAR)
        for wx in (x0 + 0.12, x1 - 0.32):  # tyres under the bumper
            c.poly(c.proj([wx, wx + 0.2, wx + 0.2, wx], [0, 0, 0.25, 0.25], Z + 0.3), dark, CAR)
        lamp = (200, 30, 30) if facing_away else (235, 235, 220)
        for lx in (x0 + 0.08, x1 - 0.33):
            c.poly(c.proj([lx, lx + 0.25, lx + 0.25, lx], [belt - 0.25, belt - 0.25, belt - 0.08, belt - 0.08], Z), _col(r, lamp, 10), CAR)
        c.poly(c.proj([X - 0.25, X + 0.25, X + 0.25, X - 0.25], [0.35, 0.35, 0.47, 0.47], Z), _grey(r, 200, 240, 5), CAR)

    def person(self, X: float, Z: float) -> None:
        c, r = self.c, self.rng
        s = c.scale(Z)
        hgt = r.uniform(1.5, 1.9)
        legs = _col(r, _CLOTHES[int(r.integers(0, len(_CLOTHES)))], 10)
        top = _col(r, _CLOTHES[int(r.integers(0, len(_CLOTHES)))], 15)
        skin = _col(r, _pick(r, [(1, (225, 185, 155)), (1, (170, 120, 90)), (1, (100, 70, 50))]), 10)
        hip, sh = hgt * 0.52, hgt * 0.82
        stride = r.uniform(0.0, 0.35)
        lw = 0.14 * s
        c.line(c.proj(X - 0.08, hip, Z), c.proj(X - 0.08 - stride / 2, 0, Z), legs, lw, PEDESTRIAN)
        c.line(c.proj(X + 0.08, hip, Z), c.proj(X + 0.08 + stride / 2, 0, Z), legs, lw, PEDESTRIAN)
        c.poly(c.proj([X - 0.2, X + 0.2, X + 0.18, X - 0.18], [sh, sh, hip - 0.05, hip - 0.05], Z), top, PEDESTRIAN)
        swing = r.uniform(-0.2, 0.2)
        for sx in (-0.22, 0.22):
            c.line(c.proj(X + sx, sh - 0.03, Z), c.proj(X + sx * 1.1 + swing, hip - 0.05, Z), top, 0.09 * s, PEDESTRIAN)
        c.ellipse(c.proj(X, hgt - 0.11, Z), (0.1 * s, 0.12 * s), skin, PEDESTRIAN)
        if r.random() < 0.5:  # hair / hat
            c.ellipse(c.proj(X, hgt - 0.05, Z), (0.1 * s, 0.06 * s), _grey(r, 15, 90, 10), PEDESTRIAN)
        if r.random() < 0.25:  # bag
            c.poly(c.proj([X + 0.2, X + 0.42, X + 0.42, X + 0.2], [hip + 0.2, hip + 0.2, hip - 0.15, hip - 0.15], Z), _col(r, _CLOTHES[int(r.integers(0, len(_CLOTHES)))], 12), PEDESTRIAN)

    def bicyclist(self, X: float, Z: float) -> None:
        c, r = self.c, self.rng
        s = c.scale(Z)
        frame = _col(r, _pick(r, [(2, (30, 30, 35)), (1, (150, 30, 30)), (1, (40, 70, 150)), (1, (190, 190, 190))]), 10)
        tyre = _grey(r, 15, 45, 4)
        clothes = _col(r, _CLOTHES[int(r.integers(0, len(_CLOTHES)))], 15)
        legs = _col(r, _CLOTHES[int(r.integers(0, len(_CLOTHES)))], 10)
        wr = 0.34
        side_view = r.random() < 0.5
        if side_view:  # crossing: wheels as circles, seen from the side
            d = 1.05 * (1 if r.random() < 0.5 else -1)
            back, front = c.proj(X - d / 2, wr, Z), c.proj(X + d / 2, wr, Z)
            for p in (back, front):
                c.ellipse(p, (wr * s, wr * s), tyre, BICYCLIST, thickness_px=max(1.0, 0.06 * s))
            seat, bar = c.proj(X - d * 0.2, 0.95, Z), c.proj(X + d * 0.38, 1.05, Z)
            crank = c.proj(X, 0.3, Z)
            for a, b in ((back, seat), (seat, crank), (crank, back), (crank, bar), (bar, front), (seat, bar)):
                c.line(a, b, frame, 0.05 * s, BICYCLIST)
            hip = c.proj(X - d * 0.2, 1.0, Z)
            shoulder = c.proj(X + d * 0.05, 1.55, Z)
            c.line(hip, crank, legs, 0.13 * s, BICYCLIST)
            c.line(hip, shoulder, clothes, 0.32 * s, BICYCLIST)
            c.line(shoulder, bar, clothes, 0.08 * s, BICYCLIST)
            c.ellipse(c.proj(X + d * 0.12, 1.72, Z), (0.1 * s, 0.12 * s), _col(r, (60, 60, 60), 40), BICYCLIST)
        else:  # riding along the road, seen from behind: a thin upright wheel under the rider
            c.line(c.proj(X, 0, Z), c.proj(X, 2 * wr, Z), tyre, 0.05 * s, BICYCLIST)
            c.line(c.proj(X, 0, Z + 1.05), c.proj(X, 2 * wr, Z + 1.05), tyre, 0.05 * s, BICYCLIST)
            c.line(c.proj(X - 0.25, 1.1, Z + 0.7), c.proj(X + 0.25, 1.1, Z + 0.7), frame, 0.04 * s, BICYCLIST)
            for sx in (-0.1, 0.1):
                c.line(c.proj(X + sx, 0.95, Z), c.proj(X + sx * 0.8, 0.3 + r.uniform(0, 0.3), Z), legs, 0.12 * s, BICYCLIST)
            c.poly(c.proj([X - 0.2, X + 0.2, X + 0.17, X - 0.17], [1.5, 1.5, 0.9, 0.9], Z), clothes, BICYCLIST)
            c.ellipse(c.proj(X, 1.65, Z), (0.11 * s, 0.12 * s), _col(r, (60, 60, 60), 40), BICYCLIST)

    # -- layout ----------------------------------------------------------------------
    def plan_objects(self, gaps) -> tuple[list, list]:
        """Objects to draw ``(behind the facades, in front)``, each list far to near."""
        r = self.rng
        items: list[tuple[float, str, tuple]] = []  # (sort key ~ Z, kind, args)
        # fences along the building line (behind everything on the pavement) or the kerb
        for fx, kx, side in ((self.fl, self.xl, -1), (self.fr, self.xr, 1)):
            if r.random() < 0.45:
                z0 = r.uniform(2, 25)
                at_kerb = r.random() < 0.35
                X = kx + side * 0.3 if at_kerb else fx - side * 0.3
                items.append((500.0, "fence", (X, z0, z0 + r.uniform(5, 30))))
        for z0, z1, fx, side in gaps:  # trees behind the facade line
            for _ in range(int(r.integers(1, 4))):
                items.append((1e3 + r.uniform(z0, z1), "tree", (fx + side * r.uniform(1, 6), r.uniform(max(z0, 3), max(z1, 4)))))
        for kx, side in ((self.xl, -1), (self.xr, 1)):
            pave = self.pave_l if side < 0 else self.pave_r
            if r.random() < 0.45:  # a row of street trees
                step = r.uniform(6, 14)
                for z in np.arange(r.uniform(3, 10), 90, step):
                    items.append((z, "tree", (kx + side * min(0.9, pave * 0.4), z + r.uniform(-1, 1))))
            for _ in range(int(r.integers(1, 4))):
                z = r.uniform(3, 50)
                items.append((z, "pole", (kx + side * r.uniform(0.3, 0.6), z)))
            if r.random() < 0.6:  # parked cars along the kerb
                z = r.uniform(2.5, 12)
                for _ in range(int(r.integers(1, 6))):
                    items.append((z, "car", (kx - side * r.uniform(1.0, 1.3), z, True)))
                    z += r.uniform(5, 12)
            for _ in range(int(r.poisson(1.5))):
                z = r.uniform(3.5, 35)
                items.append((z, "person", (kx + side * r.uniform(0.4, max(0.5, pave - 0.3)), z)))
        for _ in range(int(r.integers(0, 3))):  # moving traffic in the lanes
            z = r.uniform(8, 60)
            lane = r.uniform(self.xl + 1.8, self.xr - 1.8) if self.road_w > 4 else 0.0
            items.append((z, "car", (lane, z, lane > self.xl + self.road_w / 2 or r.random() < 0.5)))
        if r.random() < 0.2:  # someone crossing the road
            z = r.uniform(5, 25)
            items.append((z, "person", (r.uniform(self.xl + 0.5, self.xr - 0.5), z)))
        if r.random() < 0.45:
            for _ in range(int(r.integers(1, 3))):
                z = r.uniform(4, 30)
                side = r.random() < 0.5
                items.append((z, "bicyclist", ((self.xl + r.uniform(0.6, 1.6)) if side else (self.xr - r.uniform(0.6, 1.6)), z)))
        items.sort(key=lambda t: -t[0])
        return [t for t in items if t[0] >= 1e3], [t for t in items if t[0] < 1e3]

    def draw(self, items) -> None:
        fns = {"tree": self.tree, "pole": self.pole, "car": self.car, "person": self.person,
               "bicyclist": self.bicyclist, "fence": self.fence}  # fmt: skip
        for _, kind, args in items:
            fns[kind](*args)

    def shadows(self) -> None:
        """A building's cast shadow over part of the street (image only, labels unchanged)."""
        c, r = self.c, self.rng
        if self.overcast or r.random() < 0.4:
            return
        side = -1 if r.random() < 0.5 else 1
        fx = self.fl if side < 0 else self.fr
        reach = r.uniform(2, self.road_w + 4)
        x1 = fx - side * reach
        z0, z1 = r.uniform(0.3, 15), r.uniform(25, 150)
        c.darken(c.proj([fx, x1, x1, fx], 0, [z0, z0, z1, z1]), r.uniform(0.5, 0.75), (ROAD, PAVEMENT, CAR, PEDESTRIAN, BICYCLIST, POLE, FENCE))


def _finish(c: _Canvas, rng: np.random.Generator, noise_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Camera effects (blur, texture and sensor noise, exposure, white balance) and label noise."""
    H, W = c.H, c.W
    img = cv2.GaussianBlur(c.img, (3, 3), 0.6).astype(np.float32)
    # texture: a smooth field plus fine grain, stronger on textured classes (foliage, asphalt),
    # and sensor noise everywhere (one grain field serves both)
    amp = _TEXTURE[c.lbl]
    sensor = rng.uniform(1.0, 4.0)
    smooth = cv2.resize(noise_rng.standard_normal((max(2, H // 6), max(2, W // 6)), dtype=np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    grain = noise_rng.standard_normal((H, W), dtype=np.float32)
    img += (smooth * 0.8 * amp + grain * (0.6 * amp + sensor))[..., None]
    image = np.clip(img, 0, 255).astype(np.uint8)
    # exposure, contrast, white balance and gamma as one lookup table per channel
    gain, contrast, gamma = rng.uniform(0.65, 1.25), rng.uniform(0.8, 1.15), rng.uniform(0.85, 1.15)
    wb = rng.uniform(0.9, 1.1, 3)
    v = np.arange(256, dtype=np.float64)[:, None]
    tone = np.clip(((v - 128.0) * contrast + 128.0) * gain * wb[None, :], 0, 255)
    lut = np.clip(255.0 * (tone / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
    image = cv2.LUT(image, lut.reshape(256, 1, 3))
    # boundary label noise: a few edge pixels take the neighbour's class or become ignore
    lbl = c.lbl
    for axis in (0, 1):
        a = lbl[:-1] if axis == 0 else lbl[:, :-1]
        b = lbl[1:] if axis == 0 else lbl[:, 1:]
        ys, xs = np.nonzero(a != b)
        if len(ys):
            u = noise_rng.random(len(ys))
            flip, void = u < 0.03, u > 0.995
            ny, nx = (ys + 1, xs) if axis == 0 else (ys, xs + 1)
            lbl[ys[flip], xs[flip]] = lbl[ny[flip], nx[flip]]
            lbl[ys[void], xs[void]] = IGNORE_INDEX
    # a slight camera roll, for image and label alike
    roll = rng.normal(0, 1.5) if rng.random() < 0.5 else 0.0
    if roll:
        m = cv2.getRotationMatrix2D((W / 2, H / 2), roll, 1.0 + abs(roll) * 0.012)
        image = cv2.warpAffine(image, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        lbl = cv2.warpAffine(lbl, m, (W, H), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    return image, lbl


def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"synthetic size {size!r}: expected (H, W), two integers") from None
    if h < 16 or w < 16 or h > 4096 or w > 4096:
        raise ConfigError(f"synthetic size {h}x{w} (HxW): each side must be between 16 and 4096 pixels")
    return h, w


def render_scene(seed: int, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: ``(image uint8 HxWx3 RGB, label uint8 HxW)``, identical for the same seed.

    The layout is drawn from ``seed`` alone, so the same seed at another size gives the same
    street at another resolution (the per-pixel noise differs).
    """
    size = _check_size(size)
    if int(seed) < 0:
        raise ConfigError(f"synthetic seed {seed}: must be >= 0")
    rng = np.random.default_rng(int(seed))
    noise_rng = np.random.default_rng([int(seed), 7, size[0], size[1]])  # per-pixel noise, its own stream
    st = _Street(rng, size)
    segs, gaps = st.plan_buildings()
    behind, front = st.plan_objects(gaps)
    st.sky()
    st.skyline()
    st.ground()
    st.draw(behind)
    for z0, z1, x, side, hgt in segs:
        st.facade(z0, z1, x, side, hgt)
    st.draw(front)
    st.shadows()
    return _finish(st.c, rng, noise_rng)


# ----------------------------------------------------------------------------- data set


def item_seed(seed: int, split: str, i: int) -> int:
    """The scene seed of item ``i`` of ``split``: one independent stream per (seed, split)."""
    if split not in _SPLIT_KEYS:
        raise ConfigError(f"synthetic split {split!r}: choose one of {', '.join(_SPLIT_KEYS)}")
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(_SPLIT_KEYS[split], int(i)))
    return int(ss.generate_state(1, np.uint64)[0])


CACHE_BYTES = 256 * 2**20  # rendered scenes kept in memory per process (the quickstart's 240 scenes: ~13 MB)


class _RenderCache:
    """Rendered scenes by (seed, size), up to ``CACHE_BYTES``: a training draws each scene many times (the
    quickstart: 8 times per stage, two stages), and rendering one costs ~15 ms of a 2-core CPU's time."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit, self.used = limit, 0
        self.items: dict[tuple[int, tuple[int, int]], tuple[np.ndarray, np.ndarray]] = {}

    def get(self, seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        key = (seed, tuple(size))
        hit = self.items.get(key)
        if hit is None:
            hit = render_scene(seed, size)
            nbytes = hit[0].nbytes + hit[1].nbytes
            if self.used + nbytes <= self.limit:  # full: render on demand from here on
                self.items[key] = hit
                self.used += nbytes
        return hit[0].copy(), hit[1].copy()  # callers may change what they get


_CACHE = _RenderCache()


class SyntheticScenes:
    """The synthetic data set: ``n`` scenes of ``split``, rendered on demand (nothing on disk) and kept in
    memory once rendered (up to :data:`CACHE_BYTES` per process).

    Train and val draw their scene seeds from disjoint streams, so val never repeats train.
    """

    info = SYNTHETIC_INFO

    def __init__(self, split: str = "train", n: int | None = None, size: tuple[int, int] | None = None, seed: int = 0):
        if split not in _SPLIT_KEYS:
            raise ConfigError(f"synthetic split {split!r}: choose one of {', '.join(_SPLIT_KEYS)}")
        n = DEFAULT_N[split] if n is None else int(n)
        if n < 0:
            raise ConfigError(f"synthetic n={n}: the number of scenes must be >= 0")
        self.split, self.n, self.seed = split, n, int(seed)
        self.size = _check_size(DEFAULT_SIZE if size is None else size)

    def __len__(self) -> int:
        return self.n

    @property
    def in_memory(self) -> bool:
        """Whether every scene fits the render cache: then, after the first pass, an item costs a copy and
        loader worker processes would only add inter-process copies on a CPU."""
        h, w = self.size
        return self.n * h * w * 4 <= _CACHE.limit

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"synthetic {self.split} item {i} out of range (0..{self.n - 1})")
        return _CACHE.get(item_seed(self.seed, self.split, i), self.size)

    def name(self, i: int) -> str:
        return f"synth_{self.split}_{int(i):05d}"

    def image_path(self, i: int) -> None:
        """Synthetic scenes have no file."""
        return None

    def __repr__(self) -> str:
        return f"SyntheticScenes(split={self.split!r}, n={self.n}, size={self.size}, seed={self.seed})"


def classes_json() -> dict:
    """``classes.json`` for a written synthetic folder (the layout of shared/data/camvid)."""
    return {
        "name": "synthetic",
        "num_classes": len(CLASSES),
        "ignore_index": IGNORE_INDEX,
        "names": list(CLASSES),
        "classes": [{"index": i, "name": n, "rgb": list(c)} for i, (n, c) in enumerate(zip(CLASSES, PALETTE))],
        "palette": [list(c) for c in PALETTE],
    }


def write_synthetic(
    out: str | Path,
    n: int = 500,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    overwrite: bool = False,
) -> Path:
    """Write ``n`` scenes in the CamVid compact layout and return ``out``.

    ``out/{train,val}/images/NAME.png`` (RGB) and ``out/{train,val}/labels/NAME.png`` (class ids,
    255 = ignore) plus ``out/classes.json``. PNG is lossless, so the files read back equal
    :class:`SyntheticScenes` items. Everything is written into a temporary folder beside ``out``
    that is renamed into place at the end, so an interrupted run leaves no half-written folder.
    """
    out = Path(out)
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction}: must be in [0, 1)")
    if int(n) < 1:
        raise ConfigError(f"n={n}: write at least one scene")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise DataError(f"{out}: already exists and is not empty; choose another folder, or pass --overwrite to replace it")
    n_val = int(round(int(n) * val_fraction))
    if val_fraction > 0 and int(n) > 1:
        n_val = min(max(n_val, 1), int(n) - 1)  # training needs both splits: never an empty one
    splits = {"train": SyntheticScenes("train", int(n) - n_val, size, seed), "val": SyntheticScenes("val", n_val, size, seed)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the data set folder is an ordinary one
    try:
        with Progress(
            TextColumn("[bold]synth[/] {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            transient=True,
        ) as progress:  # fmt: skip
            for split, ds in splits.items():
                (tmp / split / "images").mkdir(parents=True)
                (tmp / split / "labels").mkdir(parents=True)
                task = progress.add_task(split, total=len(ds))
                for i in range(len(ds)):
                    image, label = ds[i]
                    write_image(tmp / split / "images" / f"{ds.name(i)}.png", image)
                    write_label(tmp / split / "labels" / f"{ds.name(i)}.png", label)
                    progress.advance(task)
        write_json(tmp / "classes.json", classes_json())
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
