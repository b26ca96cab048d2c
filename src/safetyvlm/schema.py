"""The output contract: one pydantic model for training targets, evaluation and the service.

Boxes are always `[x1, y1, x2, y2]` in pixels of the *original* image. Conversion to and from a
model's own frame happens in exactly one place (`safetyvlm.model.boxes`), never here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

# The 17 categories of the public tool-safety dataset the system is modelled on, spelled exactly.
ToolName = Literal[
    "Adjustable spanner",
    "Backsaw",
    "Calipers",
    "Cutting pliers",
    "Drill",
    "Gas wrench",
    "Gun",
    "Hammer",
    "Hand",
    "Handsaw",
    "Needle-nose pliers",
    "Pliers",
    "Ratchet",
    "Screwdriver",
    "Tape measure",
    "Utility knife",
    "Wrench",
]
CATEGORIES: tuple[str, ...] = get_args(ToolName)
CATEGORY_INDEX = {name: i for i, name in enumerate(CATEGORIES)}

SAFETY_FIELDS = ("primary_function", "required_ppe", "primary_hazards", "common_misuses")
SAFETY_LISTS = SAFETY_FIELDS[1:]  # the fields that are lists of short claims (PPE, hazards, misuses)


class ToolReport(BaseModel):
    """One tool found in the image and how to use it safely."""

    model_config = ConfigDict(extra="forbid")

    name: ToolName
    bbox_2d: list[float] = Field(
        min_length=4, max_length=4, description="[x1, y1, x2, y2] in pixels of the original image"
    )
    primary_function: str = ""
    required_ppe: list[str] = Field(default_factory=list)
    primary_hazards: list[str] = Field(default_factory=list)
    common_misuses: list[str] = Field(default_factory=list)
    sources: list[str] = Field(
        default_factory=list, description="ids of knowledge-base passages the answer relied on"
    )
    score: float | None = Field(
        default=None, ge=0, le=1,
        description="the model's own probability of the tokens that spell this tool's name (measured at "
        "generation, never written by the model); detections are ranked by it",
    )

    @field_validator("bbox_2d")
    @classmethod
    def _ordered_box(cls, box: list[float]) -> list[float]:
        x1, y1, x2, y2 = box
        if x2 < x1 or y2 < y1:
            raise ValueError(f"bbox_2d must be [x1, y1, x2, y2] with x1<=x2 and y1<=y2, got {box}")
        if min(box) < 0:
            raise ValueError(f"bbox_2d has a negative coordinate: {box}")
        return box

    @model_serializer(mode="wrap")
    def _score_only_when_measured(self, handler):
        # A report built from the ground truth or the KB has no score: its JSON stays as before.
        data = handler(self)
        if isinstance(data, dict) and data.get("score", 0) is None:
            del data["score"]
        return data


class SafetyReport(BaseModel):
    """The whole answer about one image."""

    model_config = ConfigDict(extra="forbid")

    tools: list[ToolReport] = Field(default_factory=list)

    def to_json(self, *, with_sources: bool = True) -> str:
        """Compact, key-ordered JSON: the exact string a model is trained to emit (never a `score`)."""
        exclude = {"tools": {"__all__": {"score"} if with_sources else {"score", "sources"}}}
        return json.dumps(
            self.model_dump(exclude=exclude), ensure_ascii=False, separators=(", ", ": ")
        )


def report_json_schema() -> dict:
    return SafetyReport.model_json_schema()


def write_json_schema(path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report_json_schema(), indent=2) + "\n")
    return path
