"""Procedural workbench scenes with the 17 tool categories, for training when no real data is at hand.

Pure numpy + PIL, no torch, no global random state: every random choice comes from a
`numpy.random.Generator` built from the caller's seed, so the same seed and `RenderConfig` give
byte-identical pixels.

How a scene is made:

1. a textured background (wood grain, brushed / diamond metal plate, pegboard, concrete, cutting mat,
   plywood) tinted at random, then distractor clutter that is no tool category (screws, nuts, washers,
   bolts, rags, cables, blocks, paper, tape rolls, cans);
2. each tool is a list of polygon *parts* in a local frame (the tool lies along +x, about one unit
   long), built with randomised proportions, palette and variant; the parts are scaled, flipped,
   rotated and rasterised into a per-tool label map; per-part shading (cylinder / dome / plate normals
   lit by one scene light, with specular highlights and chrome banding) gives material;
3. tools are placed one by one: a tool either must not touch earlier tools, or (with probability
   `occlusion`) may lie over them, as long as every tool keeps at least `min_visible` of its own
   mask visible; otherwise it is re-placed (smaller) or dropped; each casts a soft shadow;
4. global lighting (brightness gradient, vignette, contrast, colour cast), then blur, sensor noise
   and a JPEG round trip. These last steps happen after the masks are final and never move a box.

Box convention (the project's, see README): ``bbox_2d = [x1, y1, x2, y2]`` in *pixel-edge*
coordinates of the rendered image: a tool whose visible pixels are exactly column 5 has ``x1 = 5,
x2 = 6``. Equivalently ``mask[y1:y2, x1:x2]`` holds every visible pixel of the tool and each of the
four border rows/columns of that slice holds at least one. Boxes are *modal*: the extent of the
pixels that remain visible after later tools were composited over the tool. Always
``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``.

Modules, in drawing order: `config` (RenderConfig, sizes), `materials` and `geometry` (palettes, polygon
helpers, the sketch), `tools` (the 17 builders), `clutter`, `raster` (rasterise and shade a sketch),
`backgrounds`, `scene` (`render_scene`), `splits` (seeds and balanced classes per image), `canonical`.
"""

from safetyvlm.data.render.backgrounds import warm_caches
from safetyvlm.data.render.canonical import canonical_mask
from safetyvlm.data.render.config import BACKGROUND_KINDS, CLASS_SIZE, RenderConfig
from safetyvlm.data.render.scene import mask_bbox, render_scene
from safetyvlm.data.render.splits import image_classes, image_seed, render_example, render_examples

__all__ = [
    "RenderConfig",
    "render_scene",
    "render_example",
    "render_examples",
    "image_seed",
    "image_classes",
    "canonical_mask",
    "mask_bbox",
    "CLASS_SIZE",
    "BACKGROUND_KINDS",
    "warm_caches",
]
