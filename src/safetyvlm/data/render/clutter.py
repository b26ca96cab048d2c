"""Clutter: distractor objects that are no tool category."""

from __future__ import annotations

import math

from safetyvlm.data.render.geometry import _Sketch, _ellipse, _rect, _rrect, _strip, _u
from safetyvlm.data.render.materials import BRASS, GRIPS, _col, _darker, _lighter, _metal, _pick


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
