"""Rasterising a sketch at a pose into a label map, and shading its pixels."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from safetyvlm.data.render.geometry import _DOME, _Sketch
from safetyvlm.data.render.materials import _MAT_TABLE


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
