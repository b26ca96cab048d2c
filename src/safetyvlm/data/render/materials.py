"""Materials (shading constants), palettes and colour helpers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
