"""The one in-memory shape every data source is turned into before it becomes a dataset row."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

SPLITS = ("train", "valid", "test")


class InvalidInput(ValueError):
    """A source file or row that cannot be used. `where` names the file/row so a user can fix it."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass
class SourceExample:
    """One image as an importer or the renderer yields it.

    `instances` hold the *source's* class names (mapped onto the 17 categories later, by the class
    map) and boxes `[x1, y1, x2, y2]` in pixels of this image. `safety` optionally carries per-class
    safety fields that came with the source (the real parquet layout has them), keyed like `instances`.
    `where` names the file/row for error messages.
    """

    image_name: str
    split: str
    image: Image.Image | Path | bytes
    instances: list[dict] = field(default_factory=list)
    safety: dict[str, dict] = field(default_factory=dict)
    where: str = ""
