"""Params sections -> config dataclasses, refusing keys a dataclass does not have (typos fail loudly)."""

from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

T = TypeVar("T")


def from_section(cls: type[T], d: dict, section: str) -> T:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{section}: unknown keys {unknown}; known: {sorted(known)}")
    return cls(**d)
