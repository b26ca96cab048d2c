"""Backgrounds and noise tiles (deterministic, cached per process)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image

from safetyvlm.data.render.config import BACKGROUND_KINDS, RenderConfig
from safetyvlm.data.render.materials import _col, _pick


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
    rng = np.random.default_rng([0x5AFE, BACKGROUND_KINDS.index(kind), variant, S])
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
    for kind in BACKGROUND_KINDS:
        for v in range(_BG_VARIANTS):
            _bg_tile(kind, v, S, min(H, W) / 224.0)
    _noise_tile(S)
    _grid(H, W)


def _background(rng, H, W, kinds: Sequence[str] = BACKGROUND_KINDS) -> np.ndarray:
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
