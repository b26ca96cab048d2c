"""Pictures of the data for people: boxes drawn on images, laid out in a grid."""

from __future__ import annotations

import colorsys

from PIL import Image, ImageDraw, ImageFont

from safetyvlm.schema import CATEGORIES, CATEGORY_INDEX


def class_colour(name: str) -> tuple[int, int, int]:
    hue = CATEGORY_INDEX.get(name, 0) / len(CATEGORIES)
    r, g, b = colorsys.hsv_to_rgb(hue, 0.9, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_instances(image: Image.Image, instances: list[dict], width: int | None = None) -> Image.Image:
    """A copy of `image` with each instance's box and name drawn on it."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    line = width or max(1, round(max(out.size) / 200))
    for inst in instances:
        x1, y1, x2, y2 = inst["bbox_2d"]
        colour = class_colour(inst["name"])
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=line)
        label = inst["name"]
        tx, ty = x1 + 1, max(0, y1 - 11)
        tw = draw.textlength(label, font=font)
        draw.rectangle([tx - 1, ty, tx + tw + 1, ty + 10], fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=colour, font=font)
    return out


def sample_grid(rows: list[dict], columns: int = 4, cell: int = 256) -> Image.Image:
    """Grid of dataset rows (each with a PIL `image` and `instances`), boxes drawn, each cell `cell` px."""
    n = max(1, len(rows))
    cols = min(columns, n)
    lines = (n + cols - 1) // cols
    grid = Image.new("RGB", (cols * cell, lines * cell), (32, 32, 32))
    for i, row in enumerate(rows):
        image = row["image"]
        scale = cell / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        scaled = [
            {"name": inst["name"], "bbox_2d": [v * scale for v in inst["bbox_2d"]]} for inst in row["instances"]
        ]
        tile = draw_instances(image.convert("RGB").resize(size), scaled, width=2)
        grid.paste(tile, ((i % cols) * cell, (i // cols) * cell))
    return grid
