"""Canonical pose (for tests and inspection)."""

from __future__ import annotations

import numpy as np

from safetyvlm.data.render.config import CLASS_SIZE
from safetyvlm.data.render.geometry import _Sketch
from safetyvlm.data.render.raster import _rasterize
from safetyvlm.data.render.tools import BUILDERS
from safetyvlm.schema import CATEGORIES


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
