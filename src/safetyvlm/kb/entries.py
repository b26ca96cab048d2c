"""What the knowledge base holds, validated: tool entries, references, corpus passages, and the error a bad
file raises. The four contract fields of a `ToolEntry` (`schema.SAFETY_FIELDS`) become training targets
verbatim, so their lengths are bounded here (the `MAX_*` constants)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from safetyvlm.schema import CATEGORIES, SAFETY_FIELDS

# Length limits (words are whitespace-separated tokens).
MAX_FUNCTION_WORDS = 14
MAX_HAZARD_WORDS = 8
MAX_MISUSE_WORDS = 10
MAX_PPE_WORDS = 10
MIN_PASSAGE_WORDS = 60
MAX_PASSAGE_WORDS = 150


class KBError(ValueError):
    """The knowledge-base files are missing, malformed or fail validation."""


def _words(text: str) -> int:
    return len(text.split())


def _strip_nonempty(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _check_items(items: list[str], max_words: int | None = None) -> list[str]:
    out = []
    for i, item in enumerate(items):
        item = item.strip()
        if not item:
            raise ValueError(f"item {i} is empty")
        if max_words is not None and _words(item) > max_words:
            raise ValueError(
                f"item {i} ({item!r}) has {_words(item)} words; at most {max_words} allowed"
            )
        out.append(item)
    lowered = [s.lower() for s in out]
    dupes = sorted({s for s in lowered if lowered.count(s) > 1})
    if dupes:
        raise ValueError(f"duplicate items: {dupes}")
    return out


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Reference(_Frozen):
    """A public source the knowledge base is based on (described, never copied)."""

    id: str
    title: str = Field(min_length=1)
    publisher: str = Field(min_length=1)
    url: str = Field(min_length=1)
    note: str = ""

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"must be an http(s) URL, got {url!r}")
        return url


class ToolEntry(_Frozen):
    """Safety knowledge about one category of ``schema.CATEGORIES``."""

    name: str
    description: str = ""
    primary_function: str
    usage_instructions: list[str] = Field(min_length=3, max_length=5)
    required_ppe: list[str] = Field(min_length=2, max_length=4)
    primary_hazards: list[str] = Field(min_length=3)
    common_misuses: list[str] = Field(min_length=2)
    maintenance: str
    storage: str
    references: list[str] = Field(min_length=1)

    @field_validator("primary_function", "maintenance", "storage")
    @classmethod
    def _nonempty(cls, value: str) -> str:
        return _strip_nonempty(value)

    @field_validator("primary_function")
    @classmethod
    def _short_function(cls, value: str) -> str:
        if _words(value) > MAX_FUNCTION_WORDS:
            raise ValueError(
                f"has {_words(value)} words; at most {MAX_FUNCTION_WORDS} allowed "
                "(it is a training target)"
            )
        return value

    @field_validator("usage_instructions", "references")
    @classmethod
    def _plain_items(cls, items: list[str]) -> list[str]:
        return _check_items(items)

    @field_validator("required_ppe")
    @classmethod
    def _ppe_items(cls, items: list[str]) -> list[str]:
        return _check_items(items, MAX_PPE_WORDS)

    @field_validator("primary_hazards")
    @classmethod
    def _hazard_items(cls, items: list[str]) -> list[str]:
        return _check_items(items, MAX_HAZARD_WORDS)

    @field_validator("common_misuses")
    @classmethod
    def _misuse_items(cls, items: list[str]) -> list[str]:
        return _check_items(items, MAX_MISUSE_WORDS)

    def safety_fields(self) -> dict[str, Any]:
        """The contract fields (``schema.SAFETY_FIELDS``), lists copied."""
        out: dict[str, Any] = {}
        for key in SAFETY_FIELDS:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, list) else value
        return out


class Passage(_Frozen):
    """One retrieval document."""

    id: str = Field(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
    title: str = Field(min_length=1)
    category: str | None
    text: str
    references: list[str] = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _text_length(cls, text: str) -> str:
        text = " ".join(text.split())
        n = _words(text)
        if not MIN_PASSAGE_WORDS <= n <= MAX_PASSAGE_WORDS:
            raise ValueError(
                f"has {n} words; needs {MIN_PASSAGE_WORDS}-{MAX_PASSAGE_WORDS}"
            )
        return text

    @field_validator("category")
    @classmethod
    def _known_category(cls, category: str | None) -> str | None:
        if category is not None and category not in CATEGORIES:
            raise ValueError(
                f"unknown category {category!r} (use one of schema.CATEGORIES or null)"
            )
        return category

    @field_validator("references")
    @classmethod
    def _refs(cls, items: list[str]) -> list[str]:
        return _check_items(items)


class KnowledgeBase(_Frozen):
    """Validated tool entries, references and corpus. Build with :func:`load_kb`."""

    tools: dict[str, ToolEntry]
    references: dict[str, Reference]
    corpus: list[Passage]

    def tool(self, name: str) -> ToolEntry:
        try:
            return self.tools[name]
        except KeyError:
            raise KeyError(
                f"no knowledge-base entry for {name!r}; known categories: {', '.join(self.tools)}"
            ) from None

    def safety_fields(self, name: str) -> dict[str, Any]:
        """``{primary_function, required_ppe, primary_hazards, common_misuses}`` for ``name``."""
        return self.tool(name).safety_fields()

    def passages_for(self, category: str | None) -> list[Passage]:
        """Passages of one category, in file order; ``None`` gives the general ones."""
        if category is not None and category not in self.tools:
            raise KeyError(
                f"unknown category {category!r}; known categories: {', '.join(self.tools)}"
            )
        return [p for p in self.corpus if p.category == category]

    def passage(self, passage_id: str) -> Passage:
        for p in self.corpus:
            if p.id == passage_id:
                return p
        raise KeyError(f"no corpus passage with id {passage_id!r}")

    def reference(self, ref_id: str) -> Reference:
        try:
            return self.references[ref_id]
        except KeyError:
            raise KeyError(f"no reference with id {ref_id!r}") from None
