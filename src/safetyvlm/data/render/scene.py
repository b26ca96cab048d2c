"""Scene assembly: background, clutter, tools placed with occlusion and shadows, global lighting,
blur, noise and JPEG (see the package docstring)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from safetyvlm.data.render.backgrounds import _background, _grid, _noise_tile
from safetyvlm.data.render.clutter import _clutter
from safetyvlm.data.render.config import BACKGROUND_KINDS, CLASS_SIZE, RenderConfig
from safetyvlm.data.render.geometry import _Sketch
from safetyvlm.data.render.raster import _Raster, _rasterize, _shade
from safetyvlm.data.render.tools import BUILDERS
from safetyvlm.schema import CATEGORIES


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
    canvas = _background(rng, H, W, cfg.backgrounds or BACKGROUND_KINDS)
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
