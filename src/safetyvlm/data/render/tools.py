"""The 17 tools. Each builder draws one randomised instance into a sketch (local frame)."""

from __future__ import annotations

import math

from safetyvlm.data.render.geometry import (_Sketch, _ellipse, _profile, _rect, _rot, _rrect, _strip,
                                           _teeth, _u)
from safetyvlm.data.render.materials import (BRASS, CHROME, DARK, GRIPS, POWER, SKINS, STEEL, WOODS, _col,
                                            _darker, _lighter, _metal, _pick)
from safetyvlm.schema import CATEGORIES


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
