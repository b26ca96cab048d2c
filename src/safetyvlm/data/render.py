"""Procedural workbench scenes with the 17 tool categories, for training when no real data is at hand.

Pure numpy + PIL, no torch, no global random state: every random choice comes from a
`numpy.random.Generator` built from the caller's seed, so the same seed and `RenderConfig` give
byte-identical pixels.

How a scene is made:

1. a textured background (wood grain, brushed / diamond metal plate, pegboard, concrete, cutting mat,
   plywood) tinted at random, then distractor clutter that is no tool category (screws, nuts, washers,
   bolts, rags, cables, blocks, paper, tape rolls, cans);
2. each tool is a list of polygon *parts* in a local frame (the tool lies along +x, about one unit
   long), built with randomised proportions, palette and variant; the parts are scaled, flipped,
   rotated and rasterised into a per-tool label map; per-part shading (cylinder / dome / plate normals
   lit by one scene light, with specular highlights and chrome banding) gives material;
3. tools are placed one by one: a tool either must not touch earlier tools, or (with probability
   `occlusion`) may lie over them, as long as every tool keeps at least `min_visible` of its own
   mask visible; otherwise it is re-placed (smaller) or dropped; each casts a soft shadow;
4. global lighting (brightness gradient, vignette, contrast, colour cast), then blur, sensor noise
   and a JPEG round trip. These last steps happen after the masks are final and never move a box.

Box convention (the project's, see README): ``bbox_2d = [x1, y1, x2, y2]`` in *pixel-edge*
coordinates of the rendered image: a tool whose visible pixels are exactly column 5 has ``x1 = 5,
x2 = 6``. Equivalently ``mask[y1:y2, x1:x2]`` holds every visible pixel of the tool and each of the
four border rows/columns of that slice holds at least one. Boxes are *modal*: the extent of the
pixels that remain visible after later tools were composited over the tool. Always
``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from safetyvlm.data.records import SourceExample
from safetyvlm.schema import CATEGORIES

__all__ = [
    "RenderConfig",
    "render_scene",
    "render_example",
    "render_examples",
    "image_seed",
    "image_classes",
    "canonical_mask",
    "mask_bbox",
    "CLASS_SIZE",
    "warm_caches",
]

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class RenderConfig:
    """Everything that shapes a rendered scene. Build from a params.yaml section with `from_dict`.

    width, height        image size in pixels.
    min_tools, max_tools number of tools per image (uniform), when the caller does not force classes.
    class_weights        relative frequency per category name; None = uniform; categories not named
                         keep weight 1; weight 0 = never drawn.
    balanced             `render_examples` cycles through shuffled blocks of classes so per-class
                         counts stay balanced (in proportion to `class_weights`) over a split.
    occlusion            probability that a tool may overlap tools placed before it.
    clutter              maximum number of distractor objects (0 = none).
    blur                 maximum Gaussian blur radius in pixels (drawn uniformly per image; 0 = off).
    noise                maximum std of additive sensor noise, in 0-255 units (0 = off).
    jpeg_quality_range   JPEG round trip at a quality drawn from this range; None = no JPEG.
    min_visible          fraction of a tool's own mask that must stay visible (occlusion, border).
    scale_range          tool length as a fraction of min(width, height), before the per-class size
                         factor (`CLASS_SIZE`); shrunk automatically when a tool does not fit.
    rotation_range       rotation in degrees, uniform.
    flip                 mirror tools at random (left/right-handed views).
    truncation           probability that a tool may be cut by the image border.
    shadows              draw soft drop shadows under tools.
    lighting             strength of global lighting variation (0 = neutral, 1 = default).
    backgrounds          surface kinds to draw backgrounds from (None = all of BACKGROUND_KINDS); a
                         shifted test set uses kinds the training split never shows.
    recolor              probability that a tool's parts get random colours instead of its class
                         palette, so that the class must come from the tool's shape (0 = never).
    """

    width: int = 224
    height: int = 224
    min_tools: int = 1
    max_tools: int = 3
    class_weights: dict[str, float] | None = None
    balanced: bool = True
    occlusion: float = 0.3
    clutter: int = 4
    blur: float = 1.0
    noise: float = 6.0
    jpeg_quality_range: tuple[int, int] | None = (40, 95)
    min_visible: float = 0.5
    scale_range: tuple[float, float] = (0.35, 0.75)
    rotation_range: tuple[float, float] = (-180.0, 180.0)
    flip: bool = True
    truncation: float = 0.1
    shadows: bool = True
    lighting: float = 1.0
    backgrounds: tuple[str, ...] | None = None
    recolor: float = 0.0

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"RenderConfig.{key}: {why} (got {getattr(self, key)!r})")

        for key in ("width", "height"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 16:
                raise bad(key, "must be an integer >= 16")
        if not isinstance(self.min_tools, int) or self.min_tools < 0:
            raise bad("min_tools", "must be an integer >= 0")
        if not isinstance(self.max_tools, int) or self.max_tools < max(self.min_tools, 1):
            raise bad("max_tools", "must be an integer >= max(min_tools, 1)")
        if self.class_weights is not None:
            if not isinstance(self.class_weights, Mapping):
                raise bad("class_weights", "must be a mapping of category name -> weight")
            unknown = sorted(set(self.class_weights) - set(CATEGORIES))
            if unknown:
                raise bad("class_weights", f"unknown categories {unknown}; valid: {list(CATEGORIES)}")
            for name, w in self.class_weights.items():
                if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                    raise bad("class_weights", f"weight of {name!r} must be a finite number >= 0")
            if len(self.class_weights) == len(CATEGORIES) and sum(self.class_weights.values()) <= 0:
                raise bad("class_weights", "at least one weight must be > 0")
            self.class_weights = {k: float(v) for k, v in self.class_weights.items()}
        for key in ("balanced", "flip", "shadows"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "must be true or false")
        if self.backgrounds is not None:
            kinds = tuple(self.backgrounds)
            unknown = sorted(set(kinds) - set(_BG_KINDS))
            if not kinds or unknown:
                raise bad("backgrounds", f"must be None or a non-empty list of {list(_BG_KINDS)}")
            self.backgrounds = kinds
        for key in ("occlusion", "truncation", "recolor"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise bad(key, "must be a probability in [0, 1]")
        if not 0.0 < float(self.min_visible) <= 1.0:
            raise bad("min_visible", "must be in (0, 1]")
        if not isinstance(self.clutter, int) or self.clutter < 0:
            raise bad("clutter", "must be an integer >= 0")
        for key in ("blur", "noise", "lighting"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise bad(key, "must be a number >= 0")
        if self.jpeg_quality_range is not None:
            q = tuple(self.jpeg_quality_range)
            if len(q) != 2 or not all(isinstance(v, int) for v in q) or not 1 <= q[0] <= q[1] <= 100:
                raise bad("jpeg_quality_range", "must be None or [lo, hi] integers, 1 <= lo <= hi <= 100")
            self.jpeg_quality_range = (int(q[0]), int(q[1]))
        s = tuple(self.scale_range)
        if len(s) != 2 or not 0.0 < s[0] <= s[1] <= 2.0:
            raise bad("scale_range", "must be [lo, hi] with 0 < lo <= hi <= 2")
        self.scale_range = (float(s[0]), float(s[1]))
        r = tuple(self.rotation_range)
        if len(r) != 2 or not r[0] <= r[1]:
            raise bad("rotation_range", "must be [lo, hi] degrees with lo <= hi")
        self.rotation_range = (float(r[0]), float(r[1]))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> RenderConfig:
        """Build from a plain dict (a params.yaml section). Unknown keys are rejected."""
        d = dict(d or {})
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown render option(s) {unknown}; valid options: {valid}")
        for key in ("jpeg_quality_range", "scale_range", "rotation_range", "backgrounds"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("jpeg_quality_range", "scale_range", "rotation_range", "backgrounds"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    def weights(self) -> np.ndarray:
        """Class weights over CATEGORIES, normalised to sum 1."""
        w = np.ones(len(CATEGORIES))
        if self.class_weights is not None:
            w = np.array([self.class_weights.get(c, 1.0) for c in CATEGORIES], dtype=float)
        return w / w.sum()


# Relative length of each category (a handsaw is longer than a tape measure).
CLASS_SIZE: dict[str, float] = {
    "Adjustable spanner": 0.95,
    "Backsaw": 1.05,
    "Calipers": 1.0,
    "Cutting pliers": 0.8,
    "Drill": 0.95,
    "Gas wrench": 1.05,
    "Gun": 0.9,
    "Hammer": 1.0,
    "Hand": 0.85,
    "Handsaw": 1.3,
    "Needle-nose pliers": 0.9,
    "Pliers": 0.85,
    "Ratchet": 0.9,
    "Screwdriver": 0.85,
    "Tape measure": 0.7,
    "Utility knife": 0.75,
    "Wrench": 0.9,
}

# ---------------------------------------------------------------------------------------------
# Materials, palettes, colour helpers
# ---------------------------------------------------------------------------------------------

# name: (ambient, diffuse, specular, shininess, chrome banding, wood grain)
_MATERIALS: dict[str, tuple[float, float, float, float, float, float]] = {
    "chrome": (0.38, 0.55, 0.95, 30.0, 0.30, 0.0),
    "steel": (0.40, 0.55, 0.55, 16.0, 0.12, 0.0),
    "dark": (0.40, 0.60, 0.35, 14.0, 0.05, 0.0),
    "brass": (0.40, 0.55, 0.60, 18.0, 0.10, 0.0),
    "plastic": (0.45, 0.58, 0.32, 30.0, 0.0, 0.0),
    "rubber": (0.52, 0.50, 0.07, 6.0, 0.0, 0.0),
    "wood": (0.50, 0.52, 0.10, 8.0, 0.0, 0.10),
    "skin": (0.52, 0.50, 0.10, 8.0, 0.0, 0.0),
    "paint": (0.44, 0.56, 0.28, 20.0, 0.0, 0.0),
    "cloth": (0.62, 0.42, 0.0, 1.0, 0.0, 0.0),
    "paper": (0.70, 0.32, 0.03, 4.0, 0.0, 0.0),
    "flat": (1.0, 0.0, 0.0, 1.0, 0.0, 0.0),
}
_MAT_NAMES = tuple(_MATERIALS)
_MAT_INDEX = {m: i for i, m in enumerate(_MAT_NAMES)}
_MAT_TABLE = np.array([_MATERIALS[m] for m in _MAT_NAMES], dtype=np.float32)

GRIPS = [
    (205, 30, 30), (225, 60, 25), (240, 190, 25), (35, 80, 190), (28, 28, 30), (40, 140, 60),
    (240, 120, 20), (110, 40, 150), (20, 150, 160), (200, 200, 40),
]
STEEL = (168, 170, 175)
CHROME = (205, 208, 214)
DARK = (62, 64, 70)
BRASS = (190, 150, 70)
WOODS = [(170, 115, 60), (196, 148, 88), (140, 90, 50), (210, 170, 110)]
SKINS = [
    (255, 222, 190), (240, 196, 160), (224, 172, 130), (198, 146, 105), (160, 110, 75),
    (120, 82, 55), (90, 62, 45),
]
POWER = [  # (main, secondary) for power tools
    ((245, 195, 20), (30, 30, 32)), ((0, 140, 150), (30, 30, 32)), ((200, 30, 35), (30, 30, 32)),
    ((40, 130, 60), (30, 30, 32)), ((30, 80, 180), (35, 35, 38)), ((240, 120, 20), (70, 70, 75)),
    ((90, 92, 98), (25, 25, 28)), ((250, 220, 40), (40, 40, 44)),
]


def _pick(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def _col(rng: np.random.Generator, base, var: float = 0.12, jitter: float = 7.0):
    k = 1.0 + rng.uniform(-var, var)
    j = rng.normal(0.0, jitter, 3)
    return (
        min(255.0, max(0.0, base[0] * k + j[0])),
        min(255.0, max(0.0, base[1] * k + j[1])),
        min(255.0, max(0.0, base[2] * k + j[2])),
    )


def _metal(rng: np.random.Generator):
    """A (colour, material) for bare metal: chrome, satin steel or black oxide."""
    u = rng.random()
    if u < 0.5:
        return _col(rng, CHROME, 0.06), "chrome"
    if u < 0.8:
        return _col(rng, STEEL, 0.08), "steel"
    return _col(rng, DARK, 0.15), "dark"


def _darker(c, k: float = 0.55):
    return (c[0] * k, c[1] * k, c[2] * k)


def _lighter(c, k: float = 0.4):
    return (c[0] + (255 - c[0]) * k, c[1] + (255 - c[1]) * k, c[2] + (255 - c[2]) * k)


# ---------------------------------------------------------------------------------------------
# Geometry helpers (local tool frame: tool along +x, y down, about one unit long)
# ---------------------------------------------------------------------------------------------


def _ellipse(cx, cy, rx, ry, n=20, rot=0.0, a0=0.0, a1=2 * math.pi):
    cr, sr = math.cos(rot), math.sin(rot)
    out = []
    closed = abs(a1 - a0 - 2 * math.pi) < 1e-9
    m = n if closed else n + 1
    for i in range(m):
        a = a0 + (a1 - a0) * i / n
        x, y = rx * math.cos(a), ry * math.sin(a)
        out.append((cx + x * cr - y * sr, cy + x * sr + y * cr))
    return out


def _rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _rrect(x0, y0, x1, y1, r, n=4):
    r = min(r, (x1 - x0) / 2, (y1 - y0) / 2)
    pts = []
    for cx, cy, a in ((x1 - r, y0 + r, -math.pi / 2), (x1 - r, y1 - r, 0.0), (x0 + r, y1 - r, math.pi / 2),
                      (x0 + r, y0 + r, math.pi)):
        for i in range(n + 1):
            t = a + (math.pi / 2) * i / n
            pts.append((cx + r * math.cos(t), cy + r * math.sin(t)))
    return pts


def _profile(xs, hws, yc=0.0):
    """Symmetric outline around y=yc with half-widths hws at stations xs."""
    up = [(x, yc - h) for x, h in zip(xs, hws)]
    lo = [(x, yc + h) for x, h in zip(reversed(xs), reversed(hws))]
    return up + lo


def _bar(p0, p1, w0, w1=None, caps=False, n=6):
    """Quad (or capsule when caps) from p0 to p1 with widths w0 -> w1."""
    w1 = w0 if w1 is None else w1
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    L = math.hypot(dx, dy) or 1e-9
    ux, uy = dx / L, dy / L
    nx, ny = -uy, ux
    h0, h1 = w0 / 2, w1 / 2
    if not caps:
        return [
            (p0[0] + nx * h0, p0[1] + ny * h0), (p1[0] + nx * h1, p1[1] + ny * h1),
            (p1[0] - nx * h1, p1[1] - ny * h1), (p0[0] - nx * h0, p0[1] - ny * h0),
        ]
    a = math.atan2(ny, nx)
    pts = [(p1[0] + h1 * math.cos(a - math.pi * i / n), p1[1] + h1 * math.sin(a - math.pi * i / n))
           for i in range(n + 1)]
    pts += [(p0[0] + h0 * math.cos(a + math.pi - math.pi * i / n), p0[1] + h0 * math.sin(a + math.pi - math.pi * i / n))
            for i in range(n + 1)]
    return pts


def _strip(centers, widths):
    """One polygon following a polyline with per-vertex widths."""
    n = len(centers)
    left, right = [], []
    for i in range(n):
        if i == 0:
            dx, dy = centers[1][0] - centers[0][0], centers[1][1] - centers[0][1]
        elif i == n - 1:
            dx, dy = centers[i][0] - centers[i - 1][0], centers[i][1] - centers[i - 1][1]
        else:
            dx, dy = centers[i + 1][0] - centers[i - 1][0], centers[i + 1][1] - centers[i - 1][1]
        L = math.hypot(dx, dy) or 1e-9
        nx, ny = -dy / L, dx / L
        h = widths[i] / 2
        left.append((centers[i][0] + nx * h, centers[i][1] + ny * h))
        right.append((centers[i][0] - nx * h, centers[i][1] - ny * h))
    return left + right[::-1]


def _teeth(x0, x1, y, pitch, depth):
    """Zig-zag from x0 to x1 (either direction) along y; teeth point towards y + depth."""
    n = max(1, int(abs(x1 - x0) / pitch))
    step = (x1 - x0) / n
    pts = []
    for i in range(n):
        pts.append((x0 + step * i, y))
        pts.append((x0 + step * (i + 0.35), y + depth))
    pts.append((x1, y))
    return pts


def _rot(pts, ang, cx=0.0, cy=0.0):
    c, s = math.cos(ang), math.sin(ang)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in pts]


def _pca_axis(pts):
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    syy = sum((p[1] - my) ** 2 for p in pts)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    a = 0.5 * math.atan2(2 * sxy, sxx - syy)
    nx, ny = -math.sin(a), math.cos(a)
    hw = max(abs((p[0] - mx) * nx + (p[1] - my) * ny) for p in pts) or 1e-3
    return mx, my, nx, ny, hw


_FLAT, _CYL, _DOME = 0, 1, 2


class _Sketch:
    """A tool (or clutter object) as ordered polygon parts; erase parts cut holes."""

    __slots__ = ("parts",)

    def __init__(self):
        # (pts, colour or None for erase, material index, mode, axis (cx,cy,nx,ny,hw), curvature)
        self.parts: list[tuple] = []

    def add(self, pts, col, mat="plastic", mode="cyl", axis=None, curv=1.0):
        m = {"flat": _FLAT, "cyl": _CYL, "dome": _DOME, "plate": _CYL}[mode]
        if mode == "plate":
            curv = min(curv, 0.35)
        if m == _FLAT:
            axis = (0.0, 0.0, 0.0, 1.0, 1.0)
            curv = 0.0
        elif axis is None:
            if m == _CYL:
                axis = _pca_axis(pts)
            else:
                n = len(pts)
                mx = sum(p[0] for p in pts) / n
                my = sum(p[1] for p in pts) / n
                r = max(math.hypot(p[0] - mx, p[1] - my) for p in pts) or 1e-3
                axis = (mx, my, 0.0, 1.0, r)
        self.parts.append((pts, col, _MAT_INDEX[mat], m, axis, curv))

    def bar(self, p0, p1, w0, w1=None, col=(128, 128, 128), mat="plastic", caps=False, curv=1.0):
        pts = _bar(p0, p1, w0, w1, caps)
        dx, dy = p1[0] - p0[0], p1[1] - p0[1]
        L = math.hypot(dx, dy) or 1e-9
        hw = max(w0, w0 if w1 is None else w1) / 2
        axis = ((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2, -dy / L, dx / L, hw)
        self.parts.append((pts, col, _MAT_INDEX[mat], _CYL, axis, curv))

    def disc(self, cx, cy, r, col, mat="steel", curv=0.6, n=20):
        self.parts.append((_ellipse(cx, cy, r, r, n), col, _MAT_INDEX[mat], _DOME, (cx, cy, 0.0, 1.0, r), curv))

    def line(self, p0, p1, w, col):
        self.parts.append((_bar(p0, p1, w), col, _MAT_INDEX["flat"], _FLAT, (0.0, 0.0, 0.0, 1.0, 1.0), 0.0))

    def erase(self, pts):
        self.parts.append((pts, None, 0, _FLAT, (0.0, 0.0, 0.0, 1.0, 1.0), 0.0))

    def erase_disc(self, cx, cy, r, n=16):
        self.erase(_ellipse(cx, cy, r, r, n))


# ---------------------------------------------------------------------------------------------
# The 17 tools. Each builder draws one randomised instance into a sketch (local frame).
# ---------------------------------------------------------------------------------------------


def _u(rng, a, b):
    return a + (b - a) * rng.random()


def _hammer(sk: _Sketch, rng):
    hw = _u(rng, 0.032, 0.045)
    hx = _u(rng, 0.33, 0.37)
    hwid = _u(rng, 0.085, 0.11)
    style = rng.integers(3)
    prof_x = [-0.5, -0.47, -0.2, hx - 0.03, hx + 0.02]
    prof_w = [hw * 1.2, hw * 1.3, hw * 1.05, hw * 0.85, hw * 0.85]
    if style == 0:
        sk.add(_profile(prof_x, prof_w), _col(rng, _pick(rng, WOODS)), "wood", axis=(0, 0, 0, 1, hw * 1.3))
    else:
        shaft = _col(rng, _pick(rng, GRIPS)) if style == 1 else _col(rng, STEEL)
        sk.add(_profile(prof_x, prof_w), shaft, "plastic" if style == 1 else "steel", axis=(0, 0, 0, 1, hw * 1.3))
        g = _col(rng, _pick(rng, GRIPS))
        gx = _u(rng, -0.16, -0.08)
        sk.add(_profile([-0.52, -0.49, gx - 0.03, gx], [hw * 1.25, hw * 1.5, hw * 1.4, hw * 1.1]), g, "rubber",
               axis=(0, 0, 0, 1, hw * 1.5))
    mcol, mmat = (_col(rng, STEEL, 0.1), "steel") if rng.random() < 0.6 else (_col(rng, DARK, 0.2), "dark")
    top = _u(rng, 0.15, 0.19)
    sk.bar((hx, -0.03), (hx, top - 0.03), hwid * 0.72, hwid * 0.8, mcol, mmat)
    sk.bar((hx, top - 0.05), (hx, top), hwid * 1.02, hwid * 1.02, _lighter(mcol, 0.25), "chrome")
    sk.add(_rrect(hx - hwid * 0.58, -0.07, hx + hwid * 0.58, 0.06, 0.02), mcol, mmat, "dome", curv=0.5)
    if rng.random() < 0.85:  # claw
        back = _u(rng, 0.06, 0.1)
        cl = [(hx, -0.05), (hx - 0.004, -0.12), (hx - back * 0.45, -0.185), (hx - back, -0.225)]
        sk.add(_strip(cl, [hwid * 0.95, hwid * 0.78, hwid * 0.6, hwid * 0.34]), mcol, mmat)
        tip = cl[-1]
        sk.erase([(tip[0] - 0.02, tip[1] - 0.01), (hx - back * 0.35, -0.175), (tip[0] + 0.005, tip[1] + 0.025)])
    else:  # ball-pein
        sk.bar((hx, -0.03), (hx, -0.13), hwid * 0.7, hwid * 0.62, mcol, mmat)
        sk.disc(hx, -0.15, hwid * 0.55, _lighter(mcol, 0.2), "chrome", curv=0.9)


def _screwdriver(sk: _Sketch, rng):
    hl = _u(rng, 0.32, 0.42)  # handle length
    hx0 = -0.5
    hx1 = hx0 + hl
    hw = _u(rng, 0.05, 0.07)
    main = _col(rng, _pick(rng, GRIPS))
    mat = "plastic"
    xs = [hx0, hx0 + 0.02, hx0 + hl * 0.25, hx0 + hl * 0.7, hx1 - 0.03, hx1]
    ws = [hw * 0.85, hw, hw * 1.02, hw * 0.95, hw * 0.72, hw * 0.5]
    sk.add(_profile(xs, ws), main, mat, axis=(0, 0, 0, 1, hw))
    style = rng.integers(3)
    if style == 0:  # rubber flutes
        sec = _col(rng, _pick(rng, GRIPS))
        for yy in (-0.45, 0.0, 0.45):
            sk.bar((hx0 + 0.05, yy * hw), (hx0 + hl * 0.75, yy * hw), hw * 0.28, col=sec, mat="rubber", caps=True)
    elif style == 1:  # two-tone band
        sec = _col(rng, _pick(rng, GRIPS))
        sk.add(_profile([hx0 + hl * 0.3, hx0 + hl * 0.7], [hw * 1.03, hw * 0.96]), sec, "rubber",
               axis=(0, 0, 0, 1, hw))
    sk.add(_profile([hx0, hx0 + 0.012], [hw * 0.85, hw * 0.95]), _darker(main, 0.7), mat, axis=(0, 0, 0, 1, hw))
    sw = _u(rng, 0.022, 0.032)
    tip_x = _u(rng, 0.38, 0.5)
    mcol, mmat = (_col(rng, CHROME, 0.05), "chrome") if rng.random() < 0.75 else (_col(rng, DARK), "dark")
    sk.bar((hx1 - 0.01, 0), (hx1 + 0.03, 0), sw * 1.9, sw * 1.4, _col(rng, CHROME, 0.05), "chrome")
    sk.bar((hx1 + 0.02, 0), (tip_x - 0.05, 0), sw, sw, mcol, mmat)
    if rng.random() < 0.55:  # flat blade
        sk.add([(tip_x - 0.05, -sw / 2), (tip_x - 0.015, -sw * 0.75), (tip_x, -sw * 0.7), (tip_x, sw * 0.7),
                (tip_x - 0.015, sw * 0.75), (tip_x - 0.05, sw / 2)], mcol, mmat, axis=(0, 0, 0, 1, sw))
    else:  # Phillips point
        sk.add([(tip_x - 0.05, -sw / 2), (tip_x - 0.01, -sw * 0.3), (tip_x, 0), (tip_x - 0.01, sw * 0.3),
                (tip_x - 0.05, sw / 2)], mcol, mmat, axis=(0, 0, 0, 1, sw / 2))
        sk.line((tip_x - 0.04, 0), (tip_x - 0.002, 0), sw * 0.18, _darker(mcol, 0.5))


def _drill(sk: _Sketch, rng):
    main, sec = _pick(rng, POWER)
    main, sec = _col(rng, main, 0.08), _col(rng, sec, 0.2)
    bt, bb = -0.27, -0.04  # motor housing top/bottom
    back = _u(rng, -0.34, -0.29)
    sk.add(_rrect(back, bt, 0.1, bb, 0.075), main, "plastic", axis=(0, (bt + bb) / 2, 0, 1, (bb - bt) / 2))
    sk.add(_rrect(back + 0.02, bt + 0.03, back + 0.12, bb - 0.03, 0.02), sec, "rubber", "plate")
    for i in range(4):  # vents
        x = back + 0.035 + i * 0.022
        sk.line((x, bt + 0.045), (x, bb - 0.045), 0.008, _darker(sec, 0.5))
    sk.bar((0.08, -0.155), (0.16, -0.155), 0.17, 0.15, sec, "rubber")  # clutch collar
    for i in range(4):
        x = 0.09 + i * 0.018
        sk.line((x, -0.23), (x, -0.08), 0.006, _darker(sec, 0.4))
    clen = _u(rng, 0.11, 0.15)
    chuck = _col(rng, (40, 40, 44), 0.2) if rng.random() < 0.7 else _col(rng, CHROME, 0.05)
    sk.bar((0.16, -0.155), (0.16 + clen, -0.155), 0.13, 0.075, chuck, "dark" if chuck[0] < 100 else "chrome")
    for i in range(3):
        x = 0.18 + i * clen / 4
        sk.line((x, -0.21), (x, -0.10), 0.007, _lighter(chuck, 0.3))
    bl = _u(rng, 0.1, 0.22)
    bw = _u(rng, 0.018, 0.03)
    bx0 = 0.16 + clen
    bcol = _col(rng, CHROME, 0.05) if rng.random() < 0.5 else _col(rng, (175, 140, 60), 0.1)
    sk.bar((bx0 - 0.01, -0.155), (bx0 + bl, -0.155), bw, bw * 0.7, bcol, "chrome")
    k = bx0 + 0.01
    while k < bx0 + bl - 0.02:  # flutes
        sk.line((k, -0.155 - bw / 2), (k + 0.015, -0.155 + bw / 2), bw * 0.3, _darker(bcol, 0.55))
        k += 0.03
    ga = _u(rng, -0.14, -0.05)
    sk.bar((-0.1, -0.08), (-0.12 + ga, 0.22), 0.13, 0.12, main, "plastic")  # grip
    sk.bar((-0.15, -0.06), (-0.17 + ga, 0.2), 0.05, 0.05, sec, "rubber")
    sk.bar((-0.03, -0.045), (-0.045, 0.06), 0.045, 0.04, sec if rng.random() < 0.6 else (200, 40, 40), "plastic",
           caps=True)  # trigger
    fx0, fx1 = -0.3 + ga * 0.5, 0.06 + ga * 0.5
    sk.add(_rrect(fx0, 0.18, fx1, 0.235, 0.02), main, "plastic", "plate")
    sk.add(_rrect(fx0 - 0.01, 0.225, fx1 + 0.01, 0.33, 0.025), _col(rng, (36, 36, 40), 0.2), "plastic", "plate")
    if rng.random() < 0.5:
        sk.line((fx0 + 0.01, 0.25), (fx1 - 0.01, 0.25), 0.012, main)


def _gun(sk: _Sketch, rng):
    heat = rng.random() < 0.4
    if heat:
        main = _col(rng, _pick(rng, [(235, 110, 20), (200, 35, 30), (40, 40, 44), (95, 98, 104), (30, 90, 170)]))
    else:
        main = _col(rng, _pick(rng, [(35, 80, 190), (30, 30, 34), (225, 80, 150), (40, 140, 60), (240, 140, 30),
                                     (120, 120, 125), (140, 60, 170)]))
    sec = _col(rng, _pick(rng, [(30, 30, 34), (240, 190, 30), (200, 200, 205)]))
    bt, bb = (-0.25, -0.02) if heat else (-0.22, -0.04)
    sk.add(_rrect(-0.3, bt, 0.12, bb, 0.09), main, "plastic", axis=(0, (bt + bb) / 2, 0, 1, (bb - bt) / 2))
    yc = (bt + bb) / 2
    if heat:
        nl = _u(rng, 0.22, 0.3)
        ncol = _col(rng, STEEL, 0.08)
        sk.bar((0.1, yc), (0.1 + nl, yc), 0.19, 0.17, ncol, "steel")
        sk.bar((0.1 + nl - 0.02, yc), (0.1 + nl, yc), 0.17, 0.17, _darker(ncol, 0.5), "dark")
        for i in range(4):
            sk.line((-0.24 + i * 0.03, bt + 0.04), (-0.24 + i * 0.03, bb - 0.04), 0.012, _darker(main, 0.35))
    else:
        ncol = _col(rng, BRASS, 0.1) if rng.random() < 0.5 else _col(rng, CHROME, 0.05)
        sk.bar((0.1, yc), (0.26, yc), 0.1, 0.04, ncol, "brass")
        sk.bar((0.25, yc), (0.35, yc), 0.022, 0.014, ncol, "brass", caps=True)
        sk.bar((-0.47, yc), (-0.28, yc), 0.075, 0.075, _col(rng, (235, 230, 200), 0.05), "plastic", caps=True)
        sk.add(_rrect(-0.33, bt - 0.01, -0.26, bb + 0.01, 0.02), sec, "rubber", "plate")
    ga = _u(rng, -0.12, -0.04)
    gtop = bb - 0.04
    gbot = _u(rng, 0.26, 0.33)
    sk.bar((-0.14, gtop), (-0.16 + ga, gbot), 0.13, 0.14, main, "plastic", caps=True)
    # trigger guard loop in front of the grip: an open ring (background shows through)
    gx = 0.08
    loop = [(gx - 0.005, bb - 0.01), (gx, bb + 0.08), (gx - 0.04, bb + 0.17), (-0.1 + ga * 0.7, bb + 0.2)]
    sk.add(_strip(loop, [0.032, 0.032, 0.032, 0.032]), main, "plastic")
    sk.bar((-0.01, bb - 0.01), (-0.035, bb + 0.1), 0.045, 0.038, sec, "plastic", caps=True)  # trigger


def _saw_handle(sk: _Sketch, rng, x_right, y_top, y_bot, col, mat, compact=False):
    """Closed (D) handle to the left of x_right, with a hand hole."""
    w = 0.3 if not compact else 0.26
    xl = x_right - w
    h = y_bot - y_top
    pts = [(x_right + 0.02, y_top + 0.02), (x_right - w * 0.35, y_top - 0.03), (xl + 0.04, y_top - 0.02),
           (xl - 0.01, y_top + h * 0.25), (xl + 0.01, y_top + h * 0.75), (xl + 0.08, y_bot + 0.02),
           (x_right - w * 0.25, y_bot + 0.04), (x_right + 0.02, y_bot - 0.01)]
    sk.add(pts, col, mat, "plate", curv=0.3)
    hx, hy = x_right - w * 0.5, y_top + h * 0.48
    sk.erase(_ellipse(hx, hy, w * 0.26, h * 0.2, 16, rot=-0.35))
    rc = _col(rng, BRASS if rng.random() < 0.5 else CHROME, 0.08)
    for yy in (y_top + h * 0.2, y_top + h * 0.78):
        sk.disc(x_right - 0.015, yy, 0.014, rc, "brass", n=10)


def _handsaw(sk: _Sketch, rng):
    heel_top = _u(rng, -0.16, -0.13)
    toe_top = _u(rng, 0.0, 0.04)
    yb = 0.11
    bx0 = -0.22
    blade = _col(rng, STEEL if rng.random() < 0.7 else CHROME, 0.06)
    pts = [(bx0, heel_top), (0.5, toe_top), (0.5, yb)] + _teeth(0.5, bx0, yb, 0.024, 0.02)[1:]
    sk.add(pts, blade, "steel", "plate", axis=(0.15, 0.0, 0.05, 1.0, 0.15))
    if rng.random() < 0.5:  # printed logo
        sk.add(_rect(-0.1, heel_top + 0.06, 0.05, heel_top + 0.1), _col(rng, _pick(rng, GRIPS)), "flat", "flat")
    hcol = _col(rng, _pick(rng, GRIPS + WOODS[:2]))
    _saw_handle(sk, rng, bx0 + 0.05, heel_top - 0.03, yb + 0.04, hcol, "plastic")


def _backsaw(sk: _Sketch, rng):
    yt, yb = _u(rng, -0.07, -0.05), _u(rng, 0.09, 0.12)
    bx0, bx1 = -0.2, _u(rng, 0.42, 0.5)
    blade = _col(rng, STEEL, 0.06)
    pts = [(bx0, yt), (bx1, yt), (bx1, yb)] + _teeth(bx1, bx0, yb, 0.018, 0.016)[1:]
    sk.add(pts, blade, "steel", "plate", axis=(0.15, 0.0, 0.0, 1.0, 0.15))
    spine = _col(rng, BRASS, 0.1) if rng.random() < 0.5 else _col(rng, DARK, 0.15)
    sk.bar((bx0 - 0.02, yt - 0.012), (bx1 + 0.005, yt - 0.012), 0.055, 0.05, spine,
           "brass" if spine[0] > 120 else "dark", curv=0.8)
    hcol = _col(rng, _pick(rng, WOODS + [(30, 30, 32), (180, 40, 30)]))
    hmat = "wood" if hcol[0] > 120 and hcol[2] < 120 else "plastic"
    _saw_handle(sk, rng, bx0 + 0.04, yt - 0.05, yb + 0.12, hcol, hmat, compact=True)


def _utility_knife(sk: _Sketch, rng):
    main = _col(rng, _pick(rng, [(245, 200, 30), (240, 120, 20), (170, 172, 178), (200, 30, 30), (35, 80, 190),
                                 (30, 30, 34), (60, 60, 64)]))
    sec = _col(rng, (30, 30, 32), 0.2) if main[0] + main[1] > 200 else _col(rng, (245, 200, 30), 0.1)
    blade = _col(rng, (210, 214, 220), 0.04)
    if rng.random() < 0.6:  # trapezoid-blade knife with a curved body
        hw = _u(rng, 0.065, 0.085)
        sk.add(_profile([-0.45, -0.42, -0.2, 0.05, 0.26, 0.3], [hw * 0.8, hw, hw * 1.1, hw * 1.0, hw * 0.7, hw * 0.55]),
               main, "plastic" if main[0] != main[1] else "steel", axis=(0, 0, 0, 1, hw))
        sk.add(_profile([-0.4, -0.36, -0.1, 0.0], [hw * 0.6, hw * 0.75, hw * 0.8, hw * 0.5], yc=hw * 0.15),
               sec, "rubber", axis=(0, hw * 0.15, 0, 1, hw * 0.8))
        sk.add(_rrect(0.02, -hw * 1.25, 0.12, -hw * 0.75, 0.01), sec, "rubber", "plate")  # slider
        sk.disc(-0.05, 0.0, hw * 0.22, _col(rng, CHROME, 0.05), "chrome", n=10)
        bl = _u(rng, 0.1, 0.16)
        sk.add([(0.27, -hw * 0.45), (0.27 + bl * 0.55, -hw * 0.45), (0.27 + bl, hw * 0.5), (0.27, hw * 0.5)],
               blade, "chrome", "plate")
    else:  # snap-off cutter: long slim body, long segmented blade
        hw = _u(rng, 0.04, 0.055)
        sk.add(_rrect(-0.45, -hw, 0.25, hw, hw * 0.6), main, "plastic", axis=(0, 0, 0, 1, hw))
        sk.add(_rect(-0.05, -hw * 1.15, 0.1, -hw * 0.6), sec, "rubber", "plate")
        for i in range(4):
            x = -0.04 + i * 0.035
            sk.line((x, -hw * 1.1), (x, -hw * 0.65), 0.008, _darker(sec, 0.4))
        sk.bar((0.22, 0), (0.29, 0), hw * 1.6, hw * 1.1, _col(rng, CHROME, 0.05), "chrome")
        bl = _u(rng, 0.12, 0.2)
        bw = hw * 1.1
        sk.add([(0.28, -bw / 2), (0.28 + bl, -bw / 2), (0.28 + bl - bw * 0.9, bw / 2), (0.28, bw / 2)], blade,
               "chrome", "plate")
        k = 0.3
        while k < 0.28 + bl - bw:
            sk.line((k + bw * 0.45, -bw / 2), (k - bw * 0.45, bw / 2), 0.005, _darker(blade, 0.55))
            k += 0.04


def _tape_measure(sk: _Sketch, rng):
    case = _col(rng, _pick(rng, [(245, 200, 30), (245, 200, 30), (200, 30, 30), (185, 188, 194), (240, 120, 20),
                                 (40, 40, 44), (30, 90, 180)]))
    sec = _col(rng, (35, 35, 38), 0.2) if case[0] + case[1] > 250 else _col(rng, (245, 200, 30), 0.1)
    s = _u(rng, 0.27, 0.32)
    sk.add(_rrect(-s, -s, s * 0.95, s, s * 0.42), case, "plastic" if case[0] < 180 or case[2] < 150 else "chrome",
           "dome", curv=0.45)
    if rng.random() < 0.6:
        sk.add(_rrect(-s + 0.03, -s + 0.03, s * 0.95 - 0.03, s - 0.03, s * 0.36), sec, "rubber", "dome", curv=0.3)
        sk.add(_rrect(-s + 0.07, -s + 0.07, s * 0.95 - 0.07, s - 0.07, s * 0.3), case, "plastic", "dome", curv=0.3)
    sk.disc(-0.01, -0.01, s * 0.42, _darker(case, 0.85), "plastic", curv=0.5)
    sk.disc(-0.01, -0.01, 0.03, _col(rng, CHROME, 0.05), "chrome", n=10)
    sk.add(_rrect(s * 0.2, -s - 0.03, s * 0.75, -s + 0.02, 0.015), sec, "rubber", "plate")  # lock button
    tape_col = _col(rng, (245, 215, 40), 0.05) if rng.random() < 0.8 else _col(rng, (240, 240, 235), 0.03)
    L = _u(rng, 0.05, 0.5)
    ty0, ty1 = s - 0.13, s - 0.06
    x0 = s * 0.9
    sk.add(_rect(x0, ty0, x0 + L, ty1), tape_col, "plastic", "cyl", axis=(0, (ty0 + ty1) / 2, 0, 1, 0.08), curv=0.5)
    k = x0 + 0.015
    i = 0
    while k < x0 + L - 0.005:
        sk.line((k, ty0), (k, ty0 + (0.035 if i % 5 == 0 else 0.018)), 0.005, (25, 25, 25))
        k += 0.02
        i += 1
    hook = _col(rng, BRASS if rng.random() < 0.5 else CHROME, 0.08)
    sk.add(_rect(x0 + L, ty0 - 0.025, x0 + L + 0.018, ty1 + 0.02), hook, "brass", "plate")
    sk.add(_rect(x0 - 0.015, ty0 - 0.01, x0 + 0.01, ty1 + 0.01), _darker(case, 0.6), "plastic", "flat")


def _calipers(sk: _Sketch, rng):
    steel = _col(rng, (200, 202, 208), 0.05)
    sk.add(_rect(-0.5, -0.035, 0.5, 0.025), steel, "chrome", "plate", axis=(0, -0.005, 0, 1, 0.03))
    x = -0.3
    i = 0
    while x < 0.47:  # scale
        sk.line((x, 0.025), (x, 0.025 - (0.03 if i % 5 == 0 else 0.016)), 0.004, (40, 40, 44))
        x += 0.016
        i += 1
    # fixed outside jaw (down) with its measuring face on the right, and small inside jaw (up)
    jx = -0.36
    sk.add([(-0.47, 0.02), (jx, 0.02), (jx, 0.27), (jx - 0.02, 0.3), (-0.45, 0.14), (-0.47, 0.06)], steel, "chrome",
           "plate")
    sk.add([(-0.44, -0.03), (jx, -0.03), (jx, -0.13), (jx - 0.02, -0.14), (-0.42, -0.07)], steel, "chrome", "plate")
    s0 = _u(rng, jx + 0.0, jx + 0.3)
    kind = rng.random()
    sw = 0.27
    if kind < 0.6:  # digital: plastic body with LCD
        body = _col(rng, _pick(rng, [(40, 40, 44), (245, 200, 30), (150, 152, 158), (200, 40, 40)]))
        sk.add(_rrect(s0, -0.085, s0 + sw, 0.085, 0.02), body, "plastic", "plate")
        sk.add(_rect(s0 + 0.05, -0.06, s0 + 0.21, 0.0), _col(rng, (165, 180, 160), 0.06), "flat", "flat")
        sk.line((s0 + 0.07, -0.03), (s0 + 0.17, -0.03), 0.02, (50, 55, 50))
        for bxp in (0.07, 0.14, 0.21):
            sk.disc(s0 + bxp, 0.045, 0.014, _col(rng, (200, 200, 200), 0.1), "plastic", n=8)
    elif kind < 0.8:  # dial
        sk.add(_rrect(s0, -0.07, s0 + sw, 0.07, 0.02), steel, "chrome", "plate")
        sk.disc(s0 + 0.13, -0.02, 0.085, _col(rng, (200, 200, 205), 0.05), "chrome")
        sk.disc(s0 + 0.13, -0.02, 0.07, (240, 240, 235), "plastic", curv=0.1)
        sk.line((s0 + 0.13, -0.02), (s0 + 0.17, -0.07), 0.008, (200, 30, 30))
    else:  # vernier
        sk.add(_rrect(s0, -0.06, s0 + sw * 0.85, 0.06, 0.015), steel, "chrome", "plate")
        for i in range(8):
            sk.line((s0 + 0.04 + i * 0.02, 0.04), (s0 + 0.04 + i * 0.02, 0.06), 0.004, (40, 40, 44))
    sk.disc(s0 + 0.06, 0.09, 0.025, _col(rng, CHROME, 0.05), "chrome", n=10)  # thumb roller
    sk.add([(s0, 0.02), (s0 + 0.1, 0.02), (s0 + 0.1, 0.06), (s0 + 0.02, 0.3), (s0, 0.27)], steel, "chrome", "plate")
    sk.add([(s0, -0.03), (s0 + 0.06, -0.03), (s0 + 0.02, -0.14), (s0, -0.13)], steel, "chrome", "plate")


def _plier_handles(sk: _Sketch, rng, pivot, spread, length, grip, width=0.065, bow=0.0):
    """Two handles from the pivot back to x = pivot - length (jaws are along +x)."""
    px = pivot
    sec = _col(rng, _pick(rng, GRIPS)) if rng.random() < 0.4 else None
    metal, mmat = _metal(rng)
    for sgn in (-1, 1):
        pts = [(px, sgn * 0.015), (px - 0.08, sgn * (0.03 + bow * 0.3)),
               (px - length * 0.55, sgn * (spread * 0.7 + bow)), (px - length, sgn * spread)]
        sk.add(_strip(pts[:3], [width * 0.8, width * 0.7, width * 0.7]), metal, mmat)
        gp = [(px - 0.1, sgn * (0.035 + bow * 0.3)), pts[2], pts[3]]
        sk.add(_strip(gp, [width * 0.95, width * 1.05, width * 1.1]), grip, "rubber")
        e = pts[3]
        sk.disc(e[0], e[1], width * 0.55, grip, "rubber", curv=0.6, n=10)
        if sec is not None:
            sk.add(_strip([(px - 0.14, sgn * (0.04 + bow * 0.35)), pts[2]], [width * 0.9, width * 1.0]), sec, "rubber")
    return metal, mmat


def _pliers(sk: _Sketch, rng):
    grip = _col(rng, _pick(rng, GRIPS))
    pv = _u(rng, 0.06, 0.1)
    metal, mmat = _plier_handles(sk, rng, pv, _u(rng, 0.07, 0.1), 0.56 + pv, grip, bow=_u(rng, 0.0, 0.02))
    jl = _u(rng, 0.3, 0.36)
    hw = _u(rng, 0.07, 0.085)
    xs = [pv - 0.04, pv + 0.05, pv + jl * 0.55, pv + jl * 0.92, pv + jl]
    sk.add(_profile(xs, [hw, hw * 1.02, hw * 0.85, hw * 0.62, hw * 0.35]), metal, mmat, axis=(0, 0, 0, 1, hw))
    sk.line((pv + 0.03, 0), (pv + jl, 0), 0.01, _darker(metal, 0.35))
    for k in range(4):  # serrations
        x = pv + jl * (0.6 + 0.1 * k)
        sk.line((x, -hw * 0.4), (x, hw * 0.4), 0.005, _darker(metal, 0.8))
    sk.erase(_ellipse(pv + jl * 0.32, 0, jl * 0.13, hw * 0.38, 12))
    sk.disc(pv, 0, hw * 1.05, metal, mmat, curv=0.4)
    sk.disc(pv, 0, hw * 0.35, _lighter(metal, 0.2), "chrome", curv=0.8, n=10)


def _cutting_pliers(sk: _Sketch, rng):
    grip = _col(rng, _pick(rng, GRIPS))
    pv = _u(rng, 0.16, 0.2)
    metal, mmat = _plier_handles(sk, rng, pv, _u(rng, 0.12, 0.16), 0.66, grip, width=0.07,
                                 bow=_u(rng, 0.03, 0.05))
    jl = _u(rng, 0.2, 0.24)
    hw = _u(rng, 0.09, 0.105)
    pts = [(pv - 0.05, -hw), (pv + jl * 0.35, -hw * 1.02), (pv + jl * 0.65, -hw * 0.8), (pv + jl * 0.88, -hw * 0.45),
           (pv + jl, 0.0), (pv + jl * 0.88, hw * 0.45), (pv + jl * 0.65, hw * 0.8), (pv + jl * 0.35, hw * 1.02),
           (pv - 0.05, hw)]
    sk.add(pts, metal, mmat, axis=(0, 0, 0, 1, hw))
    edge = _lighter(metal, 0.5)
    sk.add([(pv + 0.04, -0.012), (pv + jl * 0.97, -0.004), (pv + jl * 0.97, 0.004), (pv + 0.04, 0.012)], edge,
           "chrome", "flat")
    sk.line((pv + 0.04, 0), (pv + jl * 0.98, 0), 0.006, _darker(metal, 0.3))
    sk.disc(pv, 0, hw * 0.9, metal, mmat, curv=0.4)
    sk.disc(pv, 0, hw * 0.32, _lighter(metal, 0.2), "chrome", curv=0.8, n=10)


def _needle_nose_pliers(sk: _Sketch, rng):
    grip = _col(rng, _pick(rng, GRIPS))
    pv = _u(rng, -0.06, -0.02)
    metal, mmat = _plier_handles(sk, rng, pv, _u(rng, 0.055, 0.075), 0.46 + pv, grip, width=0.055)
    tip = _u(rng, 0.46, 0.52)
    hw = _u(rng, 0.055, 0.065)
    xs = [pv - 0.03, pv + 0.04, pv + 0.14, tip - 0.1, tip]
    ws = [hw, hw * 0.95, hw * 0.55, hw * 0.3, hw * 0.15]
    bent = rng.random() < 0.2
    outline = _profile(xs, ws)
    if bent:
        outline = [(x, y + (max(0.0, x - (tip - 0.15)) ** 1.5) * 1.2) for x, y in outline]
    sk.add(outline, metal, mmat, axis=(0, 0, 0, 1, hw))
    sk.line((pv + 0.02, 0), (tip - 0.1, 0), 0.008, _darker(metal, 0.35))
    sk.disc(pv, 0, hw * 1.1, metal, mmat, curv=0.4)
    sk.disc(pv, 0, hw * 0.38, _lighter(metal, 0.2), "chrome", curv=0.8, n=10)


def _open_end(sk, cx, ang, r, col, mat, opening):
    sk.add(_ellipse(cx, 0.0, r * 1.05, r, 20), col, mat, "dome", curv=0.3)
    slot = _rot(_rect(cx, -opening / 2, cx + r * 1.6, opening / 2), ang, cx, 0.0)
    slot += _rot(_ellipse(cx, 0.0, opening / 2, opening / 2, 10, a0=math.pi / 2, a1=1.5 * math.pi)[::-1], ang, cx, 0.0)
    sk.erase(slot)


def _wrench(sk: _Sketch, rng):
    col, mat = _metal(rng)
    if mat == "dark" and rng.random() < 0.5:
        col, mat = _col(rng, CHROME, 0.05), "chrome"
    hw = _u(rng, 0.03, 0.04)
    r1 = _u(rng, 0.085, 0.1)
    r2 = r1 * _u(rng, 0.85, 0.95)
    sk.add(_profile([-0.38, -0.28, 0.0, 0.28, 0.38], [hw * 1.5, hw * 1.05, hw, hw * 1.05, hw * 1.5]), col, mat,
           axis=(0, 0, 0, 1, hw), curv=0.5)
    sk.add(_profile([-0.25, 0.25], [hw * 0.45, hw * 0.45]), _darker(col, 0.85), mat, "plate")
    style = rng.random()
    ang = math.radians(15) * (1 if rng.random() < 0.5 else -1)
    _open_end(sk, 0.4, ang, r1, col, mat, r1 * 1.0)
    if style < 0.8:  # ring end
        sk.add(_ellipse(-0.41, 0.0, r2, r2, 20), col, mat, "dome", curv=0.3)
        n = 12
        sk.erase([(-0.41 + r2 * (0.62 if i % 2 == 0 else 0.52) * math.cos(2 * math.pi * i / n),
                   r2 * (0.62 if i % 2 == 0 else 0.52) * math.sin(2 * math.pi * i / n)) for i in range(n)])
    else:  # double open end
        _open_end(sk, -0.4, math.pi - ang, r2, col, mat, r2 * 1.0)


def _adjustable_spanner(sk: _Sketch, rng):
    col, mat = _metal(rng)
    hw = _u(rng, 0.035, 0.045)
    sk.add(_profile([-0.5, -0.46, 0.0, 0.15], [hw * 0.9, hw, hw * 1.15, hw * 1.5]), col, mat, axis=(0, 0, 0, 1, hw),
           curv=0.5)
    sk.erase(_ellipse(-0.44, 0.0, 0.025, hw * 0.45, 10))
    if rng.random() < 0.4:
        g = _col(rng, _pick(rng, GRIPS))
        sk.add(_profile([-0.42, -0.4, -0.02, 0.0], [hw * 1.05, hw * 1.2, hw * 1.3, hw * 1.15]), g, "rubber",
               axis=(0, 0, 0, 1, hw * 1.3))
    a = math.radians(_u(rng, 12, 22))
    cx = 0.14
    gap = _u(rng, 0.03, 0.08)

    def H(pts):
        return _rot(pts, a, cx, 0.0)

    sk.add(H(_ellipse(0.25, 0.0, 0.13, 0.12, 20)), col, mat, "dome", curv=0.3)
    sk.add(H([(0.22, -0.12), (0.38, -0.115), (0.46, -0.085), (0.49, -0.045), (0.45, -0.03), (0.28, -0.03)]), col, mat,
           "plate")
    sk.erase(H(_rect(0.27, -0.03, 0.56, -0.03 + gap)))
    mj = [(0.27, -0.03 + gap), (0.45, -0.03 + gap), (0.43, 0.0 + gap), (0.36, 0.05 + gap), (0.28, 0.06 + gap)]
    sk.add(H(mj), _darker(col, 0.9), mat, "plate")
    wc = _darker(col, 0.75)
    sk.bar(H([(0.235, 0.02)])[0], H([(0.235, 0.11)])[0], 0.05, 0.05, wc, mat)
    for k in range(5):
        y = 0.03 + k * 0.018
        p = H([(0.21, y), (0.26, y)])
        sk.line(p[0], p[1], 0.006, _darker(col, 0.4))


def _gas_wrench(sk: _Sketch, rng):
    """Pipe wrench: heavy handle; a shank rises from the housing to a hook jaw pointing forward (+x),
    facing the toothed heel jaw on the housing; a knurled nut sets the gap."""
    paint = _col(rng, _pick(rng, [(200, 30, 30), (200, 30, 30), (30, 80, 180), (35, 35, 38), (190, 192, 198)]))
    pmat = "paint" if paint[0] < 180 or paint[2] < 150 else "chrome"
    hw = _u(rng, 0.045, 0.055)
    sk.add(_profile([-0.5, -0.46, 0.0, 0.16], [hw * 0.9, hw, hw * 1.1, hw * 1.5]), paint, pmat, axis=(0, 0, 0, 1, hw))
    sk.add(_profile([-0.4, 0.1], [hw * 0.45, hw * 0.55]), _darker(paint, 0.75), pmat, "plate")
    sk.erase(_ellipse(-0.45, 0.0, 0.022, hw * 0.4, 10))
    steel = _col(rng, STEEL, 0.08)
    top = _u(rng, -0.42, -0.33)
    sk.add([(0.1, -0.08), (0.18, -0.14), (0.34, -0.14), (0.35, 0.06), (0.14, 0.075), (0.1, 0.05)], paint, pmat,
           "plate")
    sk.bar((0.235, -0.1), (0.235, top + 0.05), 0.07, 0.07, steel, "steel")  # shank
    jl = _u(rng, 0.42, 0.47)
    hook = [(0.18, top), (jl - 0.02, top + 0.005), (jl, top + 0.04), (jl, top + 0.09)]
    hook += _teeth(jl, 0.27, top + 0.09, 0.025, 0.016)[1:]
    hook += [(0.2, top + 0.11)]
    sk.add(hook, steel, "steel", "plate")
    heel = [(0.28, -0.13), (0.28, -0.17)] + _teeth(0.28, jl - 0.02, -0.17, 0.025, -0.016)[1:]
    heel += [(jl - 0.02, -0.12), (0.3, -0.11)]
    sk.add(heel, steel, "steel", "plate")
    nut = _col(rng, STEEL, 0.1)
    sk.bar((0.235, -0.11), (0.235, 0.03), 0.13, 0.13, nut, "steel")
    for k in range(7):
        y = -0.1 + 0.02 * k
        sk.line((0.175, y), (0.295, y), 0.007, _darker(nut, 0.5))


def _ratchet(sk: _Sketch, rng):
    col, mat = _metal(rng)
    if mat == "dark":
        col, mat = _col(rng, CHROME, 0.05), "chrome"
    hw = _u(rng, 0.03, 0.04)
    sk.add(_profile([-0.5, -0.47, 0.1, 0.2], [hw * 0.95, hw, hw * 1.05, hw * 1.3]), col, mat, axis=(0, 0, 0, 1, hw))
    if rng.random() < 0.45:
        g = _col(rng, _pick(rng, GRIPS))
        sk.add(_profile([-0.49, -0.46, -0.1, -0.07], [hw * 1.1, hw * 1.3, hw * 1.3, hw * 1.1]), g, "rubber",
               axis=(0, 0, 0, 1, hw * 1.3))
    else:
        sk.erase(_ellipse(-0.45, 0.0, 0.018, hw * 0.4, 10))
    r = _u(rng, 0.085, 0.105)
    hx = 0.2 + r * 0.9
    sk.add(_profile([0.12, 0.2, hx - r * 0.4], [hw * 1.1, r * 0.7, r * 0.9]), col, mat, axis=(0, 0, 0, 1, r))
    sk.disc(hx, 0.0, r, col, mat, curv=0.35)
    sk.disc(hx, 0.0, r * 0.8, _darker(col, 0.88), mat, curv=0.25)
    if rng.random() < 0.6:
        sq = r * 0.32
        sk.add(_rot(_rect(hx - sq, -sq, hx + sq, sq), 0.0, hx, 0.0), _col(rng, DARK, 0.2), "dark", "plate")
        sk.disc(hx, 0.0, sq * 0.35, _col(rng, CHROME, 0.05), "chrome", n=8)
    else:
        sk.disc(hx, 0.0, r * 0.35, _col(rng, CHROME, 0.05), "chrome", curv=0.8)
    sk.bar((hx - r * 0.55, -r * 0.5), (hx - r * 0.05, -r * 0.95), r * 0.3, r * 0.22, _darker(col, 0.7), mat,
           caps=True)  # direction lever


def _hand(sk: _Sketch, rng):
    skin = _col(rng, _pick(rng, SKINS), 0.06, 5.0)
    if rng.random() < 0.5:  # sleeve
        sleeve = _col(rng, _pick(rng, [(40, 60, 110), (60, 60, 64), (160, 40, 40), (90, 110, 60), (200, 120, 30),
                                       (200, 200, 200)]))
        arm_end = _u(rng, -0.38, -0.3)
        sk.bar((-0.6, 0.0), (arm_end + 0.04, 0.0), 0.27, 0.27, sleeve, "cloth")
    else:
        arm_end = -0.6
    sk.bar((arm_end, 0.0), (-0.2, 0.0), 0.2, 0.23, skin, "skin", curv=0.8)
    palm = [(-0.28, -0.1), (-0.16, -0.15), (-0.02, -0.16), (0.06, -0.145), (0.09, -0.07), (0.09, 0.05), (0.07, 0.135),
            (-0.05, 0.15), (-0.2, 0.13), (-0.28, 0.1)]
    sk.add(palm, skin, "skin", "cyl", axis=(-0.1, 0.0, 0.0, 1.0, 0.16), curv=0.6)
    spread = _u(rng, 0.0, 0.35)
    lens = [0.25, 0.29, 0.27, 0.2]
    wids = [0.062, 0.066, 0.064, 0.055]
    bases = [-0.11, -0.038, 0.035, 0.1]
    nail = _lighter(skin, 0.3)
    for i in range(4):
        ang = (i - 1.5) * spread * 0.35
        L = lens[i] * _u(rng, 0.82, 1.05)
        b = (0.05, bases[i])
        e = (b[0] + L * math.cos(ang), b[1] + L * math.sin(ang))
        sk.bar(b, e, wids[i], wids[i] * 0.85, skin, "skin", caps=True)
        nx_, ny_ = b[0] + (L - 0.035) * math.cos(ang), b[1] + (L - 0.035) * math.sin(ang)
        sk.add(_ellipse(nx_, ny_, 0.024, wids[i] * 0.3, 10, rot=ang), nail, "skin", "dome", curv=0.4)
    # thumb: two segments from the side of the palm, out and forward
    ta = _u(rng, -0.35, 0.25)
    base = (-0.13, -0.1)
    seg1 = _rot([(-0.02, -0.2)], ta, *base)[0]
    seg2 = _rot([(0.07, -0.24 - 0.03 * rng.random())], ta, *base)[0]
    sk.bar(base, seg1, 0.11, 0.085, skin, "skin", caps=True)
    sk.bar(seg1, seg2, 0.08, 0.066, skin, "skin", caps=True)
    d = math.atan2(seg2[1] - seg1[1], seg2[0] - seg1[0])
    tn = (seg2[0] - 0.025 * math.cos(d), seg2[1] - 0.025 * math.sin(d))
    sk.add(_ellipse(tn[0], tn[1], 0.024, 0.02, 10, rot=d), nail, "skin", "dome", curv=0.4)


BUILDERS = {
    "Adjustable spanner": _adjustable_spanner,
    "Backsaw": _backsaw,
    "Calipers": _calipers,
    "Cutting pliers": _cutting_pliers,
    "Drill": _drill,
    "Gas wrench": _gas_wrench,
    "Gun": _gun,
    "Hammer": _hammer,
    "Hand": _hand,
    "Handsaw": _handsaw,
    "Needle-nose pliers": _needle_nose_pliers,
    "Pliers": _pliers,
    "Ratchet": _ratchet,
    "Screwdriver": _screwdriver,
    "Tape measure": _tape_measure,
    "Utility knife": _utility_knife,
    "Wrench": _wrench,
}
assert set(BUILDERS) == set(CATEGORIES)


# ---------------------------------------------------------------------------------------------
# Clutter: objects that are no tool category
# ---------------------------------------------------------------------------------------------


def _clutter(sk: _Sketch, rng) -> float:
    """Draw one distractor; returns its size relative to min(width, height)."""
    k = rng.random()
    if k < 0.18:  # screw / bolt
        c, m = _metal(rng)
        if rng.random() < 0.3:
            c, m = _col(rng, BRASS, 0.1), "brass"
        L = _u(rng, 0.5, 1.0)
        sk.bar((-0.5, 0), (-0.5 + L, 0), 0.12, 0.1, c, m)
        if rng.random() < 0.5:
            sk.disc(-0.5, 0, 0.14, c, m)
        else:
            sk.add(_ellipse(-0.52, 0, 0.15, 0.15, 6), c, m, "plate")
        for i in range(int(L / 0.1)):
            x = -0.4 + i * 0.1
            sk.line((x, -0.05), (x + 0.04, 0.05), 0.02, _darker(c, 0.6))
        return _u(rng, 0.06, 0.12)
    if k < 0.32:  # nut / washer
        c, m = _metal(rng)
        if rng.random() < 0.5:
            sk.add(_ellipse(0, 0, 0.5, 0.5, 6), c, m, "dome", curv=0.2)
        else:
            sk.disc(0, 0, 0.5, c, m, curv=0.2)
        sk.erase_disc(0, 0, _u(rng, 0.2, 0.3))
        return _u(rng, 0.04, 0.08)
    if k < 0.46:  # rag: irregular cloth blob
        c = _col(rng, _pick(rng, [(60, 80, 150), (170, 40, 40), (200, 200, 195), (120, 120, 115), (190, 170, 120),
                                  (230, 230, 230)]), 0.15)
        n = 14
        rr = [0.35 + 0.15 * rng.random() for _ in range(n)]
        pts = [(rr[i] * math.cos(2 * math.pi * i / n), 0.7 * rr[i] * math.sin(2 * math.pi * i / n)) for i in range(n)]
        sk.add(pts, c, "cloth", "dome", curv=0.25)
        for _ in range(3):
            a = _u(rng, 0, math.pi)
            r0 = _u(rng, -0.2, 0.2)
            sk.line((r0 - 0.25 * math.cos(a), 0.2 * math.sin(a)), (r0 + 0.25 * math.cos(a), -0.2 * math.sin(a)),
                    0.03, _darker(c, 0.75))
        return _u(rng, 0.25, 0.45)
    if k < 0.58:  # cable
        c = _col(rng, _pick(rng, [(30, 30, 32), (200, 40, 40), (40, 80, 180), (230, 230, 230), (240, 180, 30)]))
        pts = [(-0.5, 0.0)]
        a = _u(rng, -0.5, 0.5)
        for _ in range(7):
            a += _u(rng, -0.9, 0.9)
            pts.append((pts[-1][0] + 0.15 * math.cos(a), pts[-1][1] + 0.15 * math.sin(a)))
        sk.add(_strip(pts, [0.035] * len(pts)), c, "rubber")
        return _u(rng, 0.3, 0.6)
    if k < 0.68:  # wooden block / cardboard box
        c = _col(rng, _pick(rng, [(190, 150, 100), (160, 120, 75), (200, 170, 120)]), 0.1)
        w = _u(rng, 0.3, 0.5)
        sk.add(_rect(-0.5, -w, 0.5, w), c, "wood" if rng.random() < 0.5 else "paper", "plate")
        sk.line((-0.5, -w * 0.9), (0.5, -w * 0.9), 0.02, _lighter(c, 0.25))
        return _u(rng, 0.12, 0.25)
    if k < 0.76:  # sheet of paper with lines
        c = _col(rng, (238, 236, 225), 0.04)
        sk.add(_rect(-0.5, -0.7, 0.5, 0.7), c, "paper", "plate")
        for i in range(8):
            y = -0.55 + i * 0.14
            sk.line((-0.4, y), (0.4 - 0.2 * rng.random(), y), 0.02, (120, 130, 160))
        return _u(rng, 0.2, 0.35)
    if k < 0.88:  # tape roll
        c = _col(rng, _pick(rng, [(220, 205, 160), (150, 152, 158), (40, 40, 42), (200, 40, 40), (40, 90, 190)]))
        sk.disc(0, 0, 0.5, c, "plastic", curv=0.15)
        sk.disc(0, 0, 0.32, _col(rng, (190, 160, 110), 0.1), "paper", curv=0.1)
        sk.erase_disc(0, 0, 0.27)
        return _u(rng, 0.1, 0.18)
    # can / bottle (seen from the side)
    c = _col(rng, _pick(rng, GRIPS + [(230, 230, 230)]))
    sk.add(_rrect(-0.5, -0.2, 0.3, 0.2, 0.04), c, "plastic", axis=(0, 0, 0, 1, 0.2))
    sk.add(_rect(-0.2, -0.2, 0.05, 0.2), _col(rng, (235, 235, 230), 0.05), "paper", axis=(0, 0, 0, 1, 0.2))
    sk.bar((0.3, 0), (0.45, 0), 0.22, 0.12, _col(rng, _pick(rng, GRIPS)), "plastic")
    return _u(rng, 0.15, 0.25)


# ---------------------------------------------------------------------------------------------
# Rasterising a sketch
# ---------------------------------------------------------------------------------------------


class _Raster:
    """A sketch rasterised at a pose: label map in a crop, plus per-label shading parameters."""

    __slots__ = ("lab", "x0", "y0", "params", "mask", "area")


def _rasterize(sk: _Sketch, scale: float, theta: float, flip: bool) -> _Raster | None:
    c, s = math.cos(theta), math.sin(theta)
    fy = -1.0 if flip else 1.0
    # local (x, y) -> image: R(theta) @ diag(1, fy) * scale
    a11, a12, a21, a22 = c * scale, -s * fy * scale, s * scale, c * fy * scale
    parts = sk.parts
    counts = [len(p[0]) for p in parts]
    allp = np.array([q for p in parts for q in p[0]], dtype=np.float64)
    X = allp[:, 0] * a11 + allp[:, 1] * a12
    Y = allp[:, 0] * a21 + allp[:, 1] * a22
    x0 = math.floor(X.min()) - 1
    y0 = math.floor(Y.min()) - 1
    w = math.ceil(X.max()) - x0 + 2
    h = math.ceil(Y.max()) - y0 + 2
    if w <= 0 or h <= 0 or w * h > 4_000_000:
        return None
    X -= x0
    Y -= y0
    xy = np.empty(2 * len(X))
    xy[0::2] = X
    xy[1::2] = Y
    flat = xy.tolist()
    lab = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(lab)
    n = len(parts)
    prm = np.zeros((n + 1, 12), dtype=np.float32)
    # columns: r g b mat mode cx cy nx ny hw curv (unused)
    pos = 0
    label = 0
    for (pts, col, mat, mode, axis, curv), cnt in zip(parts, counts):
        seg = flat[2 * pos: 2 * (pos + cnt)]
        pos += cnt
        if col is None:
            draw.polygon(seg, fill=0)
            continue
        label += 1
        draw.polygon(seg, fill=label)
        cx, cy, nx, ny, hw = axis
        prm[label, 0:3] = col
        prm[label, 3] = mat
        prm[label, 4] = mode
        prm[label, 5] = cx * a11 + cy * a12 - x0
        prm[label, 6] = cx * a21 + cy * a22 - y0
        prm[label, 7] = nx * c - ny * fy * s
        prm[label, 8] = nx * s + ny * fy * c
        prm[label, 9] = max(hw * scale, 0.5)
        prm[label, 10] = curv
    r = _Raster()
    r.lab = np.asarray(lab)
    r.x0, r.y0 = x0, y0
    r.params = prm[: label + 1]
    r.mask = r.lab > 0
    r.area = int(np.count_nonzero(r.mask))
    return r


def _shade(r: _Raster, ys: np.ndarray, xs: np.ndarray, light: tuple) -> np.ndarray:
    """Colours (N, 3) float32 for the crop pixels (ys, xs) of raster r."""
    lx, ly, lz, hx, hy, hz, lcol, phase = light
    L = r.lab[ys, xs]
    P = r.params[L]
    M = _MAT_TABLE[P[:, 3].astype(np.intp)]
    px = xs.astype(np.float32) - P[:, 5]
    py = ys.astype(np.float32) - P[:, 6]
    nx, ny = P[:, 7], P[:, 8]
    inv = P[:, 10] / P[:, 9]
    t = (px * nx + py * ny) * inv
    dome = P[:, 4] == _DOME
    a = np.where(dome, px * inv, t * nx)
    b = np.where(dome, py * inv, t * ny)
    r2 = a * a + b * b
    big = r2 > 0.97
    if big.any():
        k = np.sqrt(0.97 / r2[big])
        a[big] *= k
        b[big] *= k
        r2[big] = 0.97
    cz = np.sqrt(1.0 - r2)
    diff = np.maximum(a * lx + b * ly + cz * lz, 0.0)
    spec = np.maximum(a * hx + b * hy + cz * hz, 0.0) ** M[:, 3]
    shade = M[:, 0] + M[:, 1] * diff
    band = M[:, 4]
    if band.any():
        shade *= 1.0 + band * np.cos(5.0 * (a * 0.8 + b * 0.6) + phase)
    grain = M[:, 5]
    if grain.any():
        u = px * (-ny) + py * nx
        shade *= 1.0 + grain * np.sin(u * 0.9 + 4.0 * np.sin(u * 0.05 + t * 3.0))
    out = P[:, 0:3] * shade[:, None]
    out += (M[:, 2] * spec * 235.0)[:, None] * lcol
    return out


# ---------------------------------------------------------------------------------------------
# Backgrounds and noise tiles (deterministic, cached per process)
# ---------------------------------------------------------------------------------------------

_BG_KINDS = ("wood", "metal", "diamond", "pegboard", "concrete", "mat", "plywood")
BACKGROUND_KINDS = _BG_KINDS
_BG_VARIANTS = 3


def _smooth(rng, S, cell):
    n = max(2, S // cell + 2)
    small = rng.standard_normal((n, n)).astype(np.float32)
    im = Image.fromarray(small, mode="F").resize((S + cell, S + cell), Image.BICUBIC)
    return np.asarray(im)[:S, :S]


def _stretched(rng, S, along_x, across):
    """Noise stretched along x (streaks)."""
    small = rng.standard_normal((across, max(2, S // along_x))).astype(np.float32)
    im = Image.fromarray(small, mode="F").resize((S, S), Image.BILINEAR)
    return np.asarray(im)


@lru_cache(maxsize=64)
def _bg_tile(kind: str, variant: int, S: int, unit: float) -> np.ndarray:
    """Pattern in about [-1, 1], float32 (S, S). `unit` = pixels per 1/224 of the image."""
    rng = np.random.default_rng([0x5AFE, _BG_KINDS.index(kind), variant, S])
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    if kind == "wood":
        warp = _smooth(rng, S, int(64 * unit)) * 10 * unit + _smooth(rng, S, int(16 * unit)) * 2 * unit
        period = (5 + 4 * variant) * unit
        rings = np.sin((yy + warp) * (2 * np.pi / period))
        streak = _stretched(rng, S, int(40 * unit), S)
        p = 0.35 * rings + 0.45 * streak / 2 + 0.1 * rng.standard_normal((S, S)).astype(np.float32)
        plank = int((40 + 25 * variant) * unit)
        for y in range(plank, S, plank):
            p[y: y + max(1, int(unit)), :] = -2.0
            p[y + 1: y + plank] += float(rng.uniform(-0.3, 0.3))
        return p
    if kind == "metal":
        streak = _stretched(rng, S, int(80 * unit), S)
        p = 0.5 * streak + 0.4 * _smooth(rng, S, int(60 * unit)) + 0.15 * rng.standard_normal((S, S)).astype(np.float32)
        return p / 1.5
    if kind == "diamond":
        per = (14 + 3 * variant) * unit
        u = np.mod((xx + yy * 0.5) / per, 1.0) - 0.5
        v = np.mod((xx - yy * 0.5) / per + 0.5 * (np.floor((xx + yy * 0.5) / per) % 2), 1.0) - 0.5
        bump = ((u * u) * 8 + (v * v) * 2 < 0.12).astype(np.float32)
        p = 0.8 * bump - 0.2 + 0.25 * _stretched(rng, S, int(60 * unit), S) + 0.2 * _smooth(rng, S, int(40 * unit))
        return p
    if kind == "pegboard":
        per = (12 + 3 * variant) * unit
        u = np.mod(xx, per) - per / 2
        v = np.mod(yy, per) - per / 2
        d2 = u * u + v * v
        rad = per * 0.17
        p = 0.15 * _smooth(rng, S, int(30 * unit)) + 0.08 * rng.standard_normal((S, S)).astype(np.float32)
        p = np.where(d2 < rad * rad, -1.6, p)
        p = np.where((d2 >= rad * rad) & (d2 < (rad + unit) ** 2) & (v > 0), p + 0.4, p)
        return p.astype(np.float32)
    if kind == "concrete":
        p = (0.5 * _smooth(rng, S, int(80 * unit)) + 0.3 * _smooth(rng, S, int(20 * unit))
             + 0.25 * _smooth(rng, S, max(2, int(4 * unit))) + 0.2 * rng.standard_normal((S, S)).astype(np.float32))
        specks = rng.random((S, S)) < 0.004
        p[specks] -= 1.5
        return p
    if kind == "mat":
        per = int((16 + 4 * variant) * unit)
        p = 0.15 * _smooth(rng, S, int(50 * unit)) + 0.05 * rng.standard_normal((S, S)).astype(np.float32)
        lw = max(1, int(unit * 0.7))
        for k in range(0, S, per):
            major = (k // per) % 5 == 0
            p[:, k: k + lw] += 0.9 if major else 0.45
            p[k: k + lw, :] += 0.9 if major else 0.45
        return p
    # plywood / cardboard
    streak = _stretched(rng, S, int(120 * unit), S // 2)
    p = 0.6 * streak + 0.3 * _smooth(rng, S, int(30 * unit)) + 0.1 * rng.standard_normal((S, S)).astype(np.float32)
    return p


_BG_COLORS = {
    "wood": ([(170, 120, 70), (200, 155, 100), (130, 85, 50), (215, 180, 130)], 0.22),
    "metal": ([(150, 152, 158), (120, 122, 128), (180, 182, 186), (95, 98, 104)], 0.12),
    "diamond": ([(150, 152, 158), (120, 122, 128), (175, 178, 182)], 0.22),
    "pegboard": ([(175, 130, 85), (225, 225, 220), (120, 125, 130), (60, 90, 150), (40, 40, 44)], 0.4),
    "concrete": ([(150, 150, 148), (120, 118, 115), (175, 172, 165), (100, 102, 104)], 0.18),
    "mat": ([(40, 110, 70), (40, 50, 60), (50, 70, 130), (70, 70, 72)], 0.35),
    "plywood": ([(200, 170, 120), (175, 140, 95), (220, 200, 160), (190, 160, 120)], 0.15),
}


@lru_cache(maxsize=8)
def _noise_tile(S: int) -> np.ndarray:
    return np.random.default_rng(0x0153).standard_normal((S, S, 3)).astype(np.float32)


@lru_cache(maxsize=8)
def _grid(H: int, W: int):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    X = xx / W - 0.5
    Y = yy / H - 0.5
    return X, Y, X * X + Y * Y


def warm_caches(cfg: RenderConfig | None = None) -> None:
    """Build the background / noise tiles for cfg's image size now (about 0.2 s), e.g. in a
    data-loader worker's init, instead of lazily during the first images."""
    cfg = cfg or RenderConfig()
    H, W = cfg.height, cfg.width
    S = 2 * max(H, W)
    for kind in _BG_KINDS:
        for v in range(_BG_VARIANTS):
            _bg_tile(kind, v, S, min(H, W) / 224.0)
    _noise_tile(S)
    _grid(H, W)


def _background(rng, H, W, kinds: Sequence[str] = _BG_KINDS) -> np.ndarray:
    S = 2 * max(H, W)
    unit = min(H, W) / 224.0
    kind = kinds[int(rng.integers(len(kinds)))]
    tile = _bg_tile(kind, int(rng.integers(_BG_VARIANTS)), S, unit)
    if rng.random() < 0.5 and kind not in ("pegboard", "mat"):
        tile = tile.T
    oy = int(rng.integers(S - H + 1))
    ox = int(rng.integers(S - W + 1))
    p = tile[oy: oy + H, ox: ox + W]
    cols, amp = _BG_COLORS[kind]
    base = np.array(_col(rng, _pick(rng, cols), 0.15, 8.0), dtype=np.float32)
    amp = amp * (0.7 + 0.6 * rng.random())
    f = 1.0 + amp * p
    return f[:, :, None] * base


# ---------------------------------------------------------------------------------------------
# Scene assembly
# ---------------------------------------------------------------------------------------------


def _as_rng(seed_or_rng) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if isinstance(seed_or_rng, (np.random.SeedSequence, int, np.integer, list, tuple)):
        return np.random.default_rng(seed_or_rng)
    raise TypeError(f"seed_or_rng must be an int, a SeedSequence or a numpy Generator, got {type(seed_or_rng)}")


def mask_bbox(mask: np.ndarray) -> list[int] | None:
    """Pixel-edge box [x1, y1, x2, y2] of the True pixels of a 2-D mask (None when empty)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def _light(rng, strength):
    az = rng.uniform(0, 2 * math.pi)
    lz = rng.uniform(0.55, 0.85)
    lxy = math.sqrt(1 - lz * lz)
    lx, ly = lxy * math.cos(az), lxy * math.sin(az)
    hx, hy, hz = lx, ly, lz + 1.0
    n = math.sqrt(hx * hx + hy * hy + hz * hz)
    lcol = np.array([1.0, 1.0, 1.0], dtype=np.float32) + strength * rng.normal(0, 0.04, 3).astype(np.float32)
    return (lx, ly, lz, hx / n, hy / n, hz / n, lcol, rng.uniform(0, 2 * math.pi))


def _composite_shadow(canvas, mask, x0, y0, dx, dy, blur, strength):
    H, W = canvas.shape[:2]
    h, w = mask.shape
    pad = int(math.ceil(2 * blur + 1))
    sx0, sy0 = x0 + dx - pad, y0 + dy - pad
    sh = np.zeros((h + 2 * pad, w + 2 * pad), dtype=np.uint8)
    sh[pad: pad + h, pad: pad + w] = mask.astype(np.uint8) * 255
    im = Image.fromarray(sh)
    if blur > 0.3:
        im = im.filter(ImageFilter.BoxBlur(blur))
    a = np.asarray(im, dtype=np.float32) * (strength / 255.0)
    cx0, cy0 = max(0, sx0), max(0, sy0)
    cx1, cy1 = min(W, sx0 + a.shape[1]), min(H, sy0 + a.shape[0])
    if cx1 <= cx0 or cy1 <= cy0:
        return
    sub = a[cy0 - sy0: cy1 - sy0, cx0 - sx0: cx1 - sx0]
    canvas[cy0:cy1, cx0:cx1] *= (1.0 - sub)[:, :, None]


def _place_crop(canvas, r: _Raster, ox: int, oy: int, light, owner=None, label=0):
    """Paint raster r with its crop origin at image (ox, oy); returns nothing."""
    H, W = canvas.shape[:2]
    h, w = r.lab.shape
    cx0, cy0 = max(0, ox), max(0, oy)
    cx1, cy1 = min(W, ox + w), min(H, oy + h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    sub = r.mask[cy0 - oy: cy1 - oy, cx0 - ox: cx1 - ox]
    ys, xs = np.nonzero(sub)
    if ys.size == 0:
        return
    ys_c = ys + (cy0 - oy)
    xs_c = xs + (cx0 - ox)
    cols = _shade(r, ys_c, xs_c, light)
    canvas[ys + cy0, xs + cx0] = cols
    if owner is not None:
        owner[ys + cy0, xs + cx0] = label


def _draw_clutter(rng, canvas, cfg: RenderConfig, light, sdx, sdy):
    H, W = canvas.shape[:2]
    n = int(rng.integers(cfg.clutter + 1))
    m = min(H, W)
    for _ in range(n):
        sk = _Sketch()
        size = _clutter(sk, rng) * m
        r = _rasterize(sk, size, rng.uniform(0, 2 * math.pi), bool(rng.random() < 0.5))
        if r is None:
            continue
        h, w = r.lab.shape
        ox = int(rng.integers(-w // 3, W - w + w // 3 + 1)) if W - w + 2 * (w // 3) > 0 else (W - w) // 2
        oy = int(rng.integers(-h // 3, H - h + h // 3 + 1)) if H - h + 2 * (h // 3) > 0 else (H - h) // 2
        if cfg.shadows:
            _composite_shadow(canvas, r.mask, ox, oy, sdx // 2, sdy // 2, 1.5, 0.25)
        _place_crop(canvas, r, ox, oy, light)


def _choose_classes(rng, cfg: RenderConfig) -> list[str]:
    n = int(rng.integers(cfg.min_tools, cfg.max_tools + 1))
    p = cfg.weights()
    idx = rng.choice(len(CATEGORIES), size=n, p=p)
    return [CATEGORIES[int(i)] for i in idx]


def render_scene(seed_or_rng, cfg: RenderConfig | None = None, classes: Sequence[str] | None = None,
                 return_masks: bool = False):
    """Render one scene.

    Returns ``(image, tools)`` or, with ``return_masks=True``, ``(image, tools, masks)``:
    image is a PIL RGB image of cfg.width x cfg.height; tools a list of
    ``{"name": category, "bbox_2d": [x1, y1, x2, y2]}`` (pixel-edge, modal boxes; see module doc)
    sorted left to right by x1 then y1; masks the boolean (H, W) visible mask of each tool in the same
    order, with ``bbox_2d == mask_bbox(mask)``. `classes` forces the tools that appear (in drawing
    order, later ones on top); a tool that cannot be placed with `min_visible` kept is dropped.
    """
    cfg = cfg or RenderConfig()
    rng = _as_rng(seed_or_rng)
    if classes is None:
        classes = _choose_classes(rng, cfg)
    else:
        classes = list(classes)
        bad = [c for c in classes if c not in BUILDERS]
        if bad:
            raise ValueError(f"unknown tool classes {bad}; valid: {list(CATEGORIES)}")
    H, W = cfg.height, cfg.width
    m = min(H, W)
    light = _light(rng, cfg.lighting)
    canvas = _background(rng, H, W, cfg.backgrounds or _BG_KINDS)
    # shadow offset: away from the light
    sd = m * 0.018 * (0.5 + rng.random())
    sdx = int(round(-light[0] / max(1e-3, math.hypot(light[0], light[1])) * sd))
    sdy = int(round(-light[1] / max(1e-3, math.hypot(light[0], light[1])) * sd))
    if cfg.clutter:
        _draw_clutter(rng, canvas, cfg, light, sdx, sdy)

    owner = np.zeros((H, W), dtype=np.uint8)
    placed: list[tuple[str, int]] = []  # (name, full-mask area)
    visible: list[int] = []  # visible pixel count per placed tool
    for k_cls, name in enumerate(classes):
        # keep trying (smaller) when dropping this tool would leave fewer than min_tools
        needed = len(placed) + (len(classes) - k_cls - 1) < min(cfg.min_tools, len(classes))
        sk = _Sketch()
        BUILDERS[name](sk, rng)
        may_overlap = bool(rng.random() < cfg.occlusion) and bool(placed)
        may_truncate = bool(rng.random() < cfg.truncation)
        scale = rng.uniform(*cfg.scale_range) * CLASS_SIZE[name] * m
        theta = math.radians(rng.uniform(*cfg.rotation_range))
        flip = bool(cfg.flip and rng.random() < 0.5)
        ok = r = None
        for attempt in range(80 if needed else 24):
            if attempt == 40:
                may_overlap = bool(placed)  # last resort for min_tools: allow (bounded) occlusion
            if attempt and attempt % 4 == 0:
                scale *= 0.85
                theta = math.radians(rng.uniform(*cfg.rotation_range))
            if attempt % 4 == 0:
                r = _rasterize(sk, scale, theta, flip)
            if r is None or r.area < 12:
                continue
            h, w = r.lab.shape
            if may_overlap and rng.random() < 0.7:
                # aim at an earlier tool so that overlaps actually happen
                ys, xs = np.nonzero(owner == rng.integers(1, len(placed) + 1))
                if ys.size:
                    j = int(rng.integers(ys.size))
                    ox = int(xs[j]) - int(rng.integers(w))
                    oy = int(ys[j]) - int(rng.integers(h))
                else:
                    ox, oy = int(rng.integers(-w // 4, W - w // 2)), int(rng.integers(-h // 4, H - h // 2))
            elif may_truncate:
                ox = int(rng.integers(-w // 2, W - w // 2 + 1))
                oy = int(rng.integers(-h // 2, H - h // 2 + 1))
            else:
                ox = int(rng.integers(0, W - w + 1)) if W >= w else int(rng.integers(W - w, 1))
                oy = int(rng.integers(0, H - h + 1)) if H >= h else int(rng.integers(H - h, 1))
            cx0, cy0 = max(0, ox), max(0, oy)
            cx1, cy1 = min(W, ox + w), min(H, oy + h)
            if cx1 <= cx0 or cy1 <= cy0:
                continue
            sub = r.mask[cy0 - oy: cy1 - oy, cx0 - ox: cx1 - ox]
            inside = int(np.count_nonzero(sub))
            if inside < cfg.min_visible * r.area or inside < 12:
                continue
            under = owner[cy0:cy1, cx0:cx1][sub]
            hits = np.bincount(under, minlength=len(placed) + 1) if under.size else np.zeros(len(placed) + 1, int)
            if hits[1:].sum():
                if not may_overlap:
                    continue
                if any(visible[j] - int(hits[j + 1]) < cfg.min_visible * placed[j][1] for j in range(len(placed))):
                    continue
            ok = (r, ox, oy, cx0, cy0, cx1, cy1, sub, hits)
            break
        if ok is None:
            continue
        r, ox, oy, cx0, cy0, cx1, cy1, sub, hits = ok
        if cfg.recolor and rng.random() < cfg.recolor:
            # random part colours: the class has to be read from the outline, not the palette
            r.params[1:, 0:3] = rng.uniform(25, 235, (len(r.params) - 1, 3))
        for j in range(len(placed)):
            visible[j] -= int(hits[j + 1])
        placed.append((name, r.area))
        visible.append(int(np.count_nonzero(sub)))
        if cfg.shadows:
            _composite_shadow(canvas, r.mask, ox, oy, sdx, sdy, max(1.0, m / 224 * 2.5), 0.3 + 0.2 * rng.random())
        _place_crop(canvas, r, ox, oy, light, owner, len(placed))

    # global lighting: brightness gradient, vignette, contrast, colour cast
    X, Y, R2 = _grid(H, W)
    st = cfg.lighting
    ga = rng.uniform(0, 2 * math.pi)
    gs = st * rng.uniform(0.0, 0.5)
    gain = (1.0 + gs * (math.cos(ga) * X + math.sin(ga) * Y)) * (1.0 - st * rng.uniform(0, 0.6) * R2)
    bright = 1.0 + st * rng.uniform(-0.25, 0.2)
    contrast = 1.0 + st * rng.uniform(-0.25, 0.2)
    cast = (1.0 + st * rng.normal(0, 0.05, 3)).astype(np.float32) * (bright * contrast)
    canvas *= (gain[:, :, None] * cast).astype(np.float32, copy=False)
    canvas += 128.0 * (1.0 - contrast)
    if cfg.noise > 0:
        sigma = rng.uniform(0, cfg.noise)
        tile = _noise_tile(2 * max(H, W))
        S = tile.shape[0]
        oy, ox = int(rng.integers(S - H + 1)), int(rng.integers(S - W + 1))
        canvas += tile[oy: oy + H, ox: ox + W] * np.float32(sigma)
    np.clip(canvas, 0, 255, out=canvas)
    img = Image.fromarray(canvas.astype(np.uint8), "RGB")
    if cfg.blur > 0:
        radius = rng.uniform(0, cfg.blur)
        if radius >= 0.25:
            img = img.filter(ImageFilter.GaussianBlur(radius))
    if cfg.jpeg_quality_range is not None:
        q = int(rng.integers(cfg.jpeg_quality_range[0], cfg.jpeg_quality_range[1] + 1))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=q)
        buf.seek(0)
        img = Image.open(buf)
        img = img.convert("RGB")

    tools, masks = [], []
    for j, (name, _) in enumerate(placed):
        mk = owner == (j + 1)
        box = mask_bbox(mk)
        if box is None:  # cannot happen with min_visible > 0; kept for safety
            continue
        tools.append({"name": name, "bbox_2d": box})
        masks.append(mk)
    order = sorted(range(len(tools)), key=lambda i: (tools[i]["bbox_2d"][0], tools[i]["bbox_2d"][1], tools[i]["name"]))
    tools = [tools[i] for i in order]
    if return_masks:
        return img, tools, [masks[i] for i in order]
    return img, tools


# ---------------------------------------------------------------------------------------------
# Splits: deterministic per image, balanced classes
# ---------------------------------------------------------------------------------------------

_M64 = (1 << 64) - 1


def _check_seed(seed) -> int:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def image_seed(seed: int, i: int) -> np.random.SeedSequence:
    """The seed of image i of a split rendered with `seed`: pass it to `render_scene`."""
    return np.random.SeedSequence([_check_seed(seed), int(i), 0x1A6E])


def _counts(seed: int, n: int, cfg: RenderConfig) -> np.ndarray:
    """Number of tools of images 0..n-1 (a counter-based hash of (seed, i), vectorised)."""
    span = cfg.max_tools - cfg.min_tools + 1
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x7F4A7C15) & _M64)
        z = x * np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(31)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(29)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(32)
    return (cfg.min_tools + (z % np.uint64(span))).astype(np.int64)


def _block_base(cfg: RenderConfig) -> list[int]:
    """The multiset of class indices one balanced block holds."""
    w = cfg.weights()
    active = np.flatnonzero(w > 0)
    if np.allclose(w[active], w[active][0]):
        return [int(i) for i in active]
    B = 200
    raw = w * B
    q = np.floor(raw).astype(int)
    rest = B - q.sum()
    for i in np.argsort(-(raw - q), kind="stable")[:rest]:
        q[i] += 1
    return [int(i) for i in range(len(w)) for _ in range(q[i])]


class _ClassStream:
    def __init__(self, seed: int, cfg: RenderConfig):
        self.seed, self.base = seed, _block_base(cfg)
        self.cache: dict[int, list[int]] = {}

    def block(self, b: int) -> list[int]:
        if b not in self.cache:
            if len(self.cache) > 64:
                self.cache.clear()
            rng = np.random.default_rng([self.seed, b, 0xB10C])
            self.cache[b] = [self.base[int(k)] for k in rng.permutation(len(self.base))]
        return self.cache[b]

    def take(self, start: int, n: int) -> list[str]:
        L = len(self.base)
        return [CATEGORIES[self.block((start + k) // L)[(start + k) % L]] for k in range(n)]


def image_classes(seed: int, i: int, cfg: RenderConfig) -> list[str] | None:
    """The classes forced on image i of a balanced split (None when cfg.balanced is off)."""
    if not cfg.balanced:
        return None
    seed = _check_seed(seed)
    counts = _counts(seed, i + 1, cfg)
    start = int(counts[:i].sum())
    return _ClassStream(seed, cfg).take(start, int(counts[i]))


def _example(i: int, seed: int, cfg: RenderConfig, split: str, classes) -> SourceExample:
    img, tools = render_scene(image_seed(seed, i), cfg, classes=classes)
    name = f"synthetic-{split}-{i:06d}.png"
    return SourceExample(image_name=name, split=split, image=img, instances=tools, where=name)


def render_example(seed: int, i: int, cfg: RenderConfig | None = None, split: str = "train") -> SourceExample:
    """Image i of `render_examples(n, seed, cfg, split)`, re-rendered alone (identical pixels)."""
    cfg = cfg or RenderConfig()
    return _example(i, _check_seed(seed), cfg, split, image_classes(seed, i, cfg))


def render_examples(n: int, seed: int, cfg: RenderConfig | None = None, split: str = "train",
                    start: int = 0) -> Iterator[SourceExample]:
    """Images start..start+n-1 of the split defined by (seed, cfg), deterministic per image."""
    cfg = cfg or RenderConfig()
    seed = _check_seed(seed)
    if cfg.balanced:
        counts = _counts(seed, start + n, cfg)
        pos = int(counts[:start].sum())
        stream = _ClassStream(seed, cfg)
    for i in range(start, start + n):
        classes = None
        if cfg.balanced:
            classes = stream.take(pos, int(counts[i]))
            pos += int(counts[i])
        yield _example(i, seed, cfg, split, classes)


# ---------------------------------------------------------------------------------------------
# Canonical pose (for tests and inspection)
# ---------------------------------------------------------------------------------------------


def canonical_mask(name: str, seed: int = 0, size: int = 224) -> np.ndarray:
    """Mask of one randomised instance of `name` at the canonical pose: unrotated, unflipped, its
    local origin at the image centre, length CLASS_SIZE[name] * 0.7 * size."""
    sk = _Sketch()
    BUILDERS[name](sk, np.random.default_rng([seed, CATEGORIES.index(name)]))
    r = _rasterize(sk, CLASS_SIZE[name] * 0.7 * size, 0.0, False)
    out = np.zeros((size, size), dtype=bool)
    h, w = r.lab.shape
    ox, oy = r.x0 + size // 2, r.y0 + size // 2
    cx0, cy0, cx1, cy1 = max(0, ox), max(0, oy), min(size, ox + w), min(size, oy + h)
    out[cy0:cy1, cx0:cx1] = r.mask[cy0 - oy: cy1 - oy, cx0 - ox: cx1 - ox]
    return out
