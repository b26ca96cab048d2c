"""What shapes a rendered scene: `RenderConfig` (a params.yaml section), the surface kinds and the
relative sizes of the tool categories."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from safetyvlm.schema import CATEGORIES

BACKGROUND_KINDS = ("wood", "metal", "diamond", "pegboard", "concrete", "mat", "plywood")


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
            unknown = sorted(set(kinds) - set(BACKGROUND_KINDS))
            if not kinds or unknown:
                raise bad("backgrounds", f"must be None or a non-empty list of {list(BACKGROUND_KINDS)}")
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
