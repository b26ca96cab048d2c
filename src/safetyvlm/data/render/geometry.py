"""Geometry helpers in the local tool frame (tool along +x, y down, about one unit long) and the
`_Sketch` a tool or clutter object is drawn into."""

from __future__ import annotations

import math

from safetyvlm.data.render.materials import _MAT_INDEX


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


def _u(rng, a, b):
    return a + (b - a) * rng.random()
