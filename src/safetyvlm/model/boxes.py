"""The one place that converts boxes between original-image pixels and a model's own frame.

Boxes are `[x1, y1, x2, y2]`; `image_size` is `(width, height)` of the *original* image, as PIL's
`Image.size` gives it.

* Qwen2.5-VL (`kind="resized_pixels"`): absolute pixel coordinates on the image the vision tower
  actually sees, i.e. after the processor's `smart_resize` (dimensions rounded to multiples of
  `patch_size * merge_size`, total pixels clamped to `[min_pixels, max_pixels]`). This is the
  convention Qwen2.5-VL was pretrained on for grounding, so hub checkpoints answer in it zero-shot.
* Mllama (`kind="normalized"`): integers 0..1000 relative to the original image's width and height,
  independent of tiling and padding.

Model-frame coordinates are ints (rounded half up, clamped to the frame); original-image coordinates
come back as floats rounded to 0.01 px and clamped to the image. A round trip moves each coordinate by
at most half a frame step (`image_side / frame_side` original pixels), which the tests check for many
image sizes, including 200:1 aspect ratios. Corner order is kept as given: validating a model's box
(x1 <= x2, ...) is the parser's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# Qwen2.5-VL's released image processor settings, used when no processor is given.
QWEN_DEFAULT_MIN_PIXELS = 56 * 56
QWEN_DEFAULT_MAX_PIXELS = 14 * 14 * 4 * 1280


@dataclass(frozen=True)
class ModelFrame:
    """How one family writes box coordinates. Serialisable with `dataclasses.asdict`."""

    kind: Literal["resized_pixels", "normalized"]
    # resized_pixels: smart_resize's grid (patch_size * merge_size) and pixel budget
    factor: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    # normalized: coordinates run 0..scale
    scale: int | None = None

    def extent(self, image_size: Sequence[int]) -> tuple[int, int]:
        """(width, height) of the frame for an original image of `image_size` = (width, height)."""
        width, height = int(image_size[0]), int(image_size[1])
        if width <= 0 or height <= 0:
            raise ValueError(f"image_size must be positive (width, height), got {tuple(image_size)}")
        if self.kind == "normalized":
            return int(self.scale or 1000), int(self.scale or 1000)
        if self.kind == "resized_pixels":
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

            h, w = smart_resize(height, width, factor=self.factor or 28,
                                min_pixels=self.min_pixels or QWEN_DEFAULT_MIN_PIXELS,
                                max_pixels=self.max_pixels or QWEN_DEFAULT_MAX_PIXELS)
            return w, h
        raise ValueError(f"unknown frame kind {self.kind!r}")


def _size_value(size, *keys):
    for key in keys:
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        if value:
            return int(value)
    return None


def model_frame(family: str, processor=None) -> ModelFrame:
    """The frame of `family`, read from its processor (Qwen: min/max pixels, patch and merge size).

    With `processor=None`, Qwen2.5-VL falls back to the released processor's settings; pass the
    processor the model was trained with whenever there is one.
    """
    if family == "mllama":
        return ModelFrame(kind="normalized", scale=1000)
    if family == "qwen2_5_vl":
        if processor is None:
            return ModelFrame(kind="resized_pixels", factor=28, min_pixels=QWEN_DEFAULT_MIN_PIXELS,
                              max_pixels=QWEN_DEFAULT_MAX_PIXELS)
        ip = getattr(processor, "image_processor", processor)
        size = getattr(ip, "size", None) or {}
        min_pixels = (_size_value(size, "shortest_edge", "min_pixels")
                      or getattr(ip, "min_pixels", None) or QWEN_DEFAULT_MIN_PIXELS)
        max_pixels = (_size_value(size, "longest_edge", "max_pixels")
                      or getattr(ip, "max_pixels", None) or QWEN_DEFAULT_MAX_PIXELS)
        factor = int(getattr(ip, "patch_size", 14)) * int(getattr(ip, "merge_size", 2))
        return ModelFrame(kind="resized_pixels", factor=factor, min_pixels=int(min_pixels),
                          max_pixels=int(max_pixels))
    raise ValueError(f"unknown model family {family!r}")


def _round_half_up(v: float) -> int:
    return int(math.floor(v + 0.5))


def _clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


def to_model_frame(box: Sequence[float], image_size: Sequence[int], frame: ModelFrame) -> list[int]:
    """Original-image pixels -> the model's integer frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    width, height = float(image_size[0]), float(image_size[1])
    fw, fh = frame.extent(image_size)
    sx, sy = fw / width, fh / height
    return [_clamp(_round_half_up(x1 * sx), 0, fw), _clamp(_round_half_up(y1 * sy), 0, fh),
            _clamp(_round_half_up(x2 * sx), 0, fw), _clamp(_round_half_up(y2 * sy), 0, fh)]


def from_model_frame(box: Sequence[float], image_size: Sequence[int], frame: ModelFrame) -> list[float]:
    """The model's frame -> original-image pixels (floats, 0.01 px, clamped to the image)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    width, height = float(image_size[0]), float(image_size[1])
    fw, fh = frame.extent(image_size)
    sx, sy = width / fw, height / fh
    return [round(_clamp(x1 * sx, 0.0, width), 2), round(_clamp(y1 * sy, 0.0, height), 2),
            round(_clamp(x2 * sx, 0.0, width), 2), round(_clamp(y2 * sy, 0.0, height), 2)]


def frame_step(image_size: Sequence[int], frame: ModelFrame) -> tuple[float, float]:
    """Original pixels per model-frame unit along x and y (the resolution of a model's boxes)."""
    fw, fh = frame.extent(image_size)
    return float(image_size[0]) / fw, float(image_size[1]) / fh
