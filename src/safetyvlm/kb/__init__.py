"""The tool-safety knowledge base: one validated entry per category plus a retrieval corpus.

Two YAML files ship with the package:

* ``tools.yaml`` - ``tools`` (one entry per ``schema.CATEGORIES`` name) and ``references``
  (id -> title/publisher/url/note of the public guidance the entries are based on);
* ``corpus.yaml`` - a list of short passages for retrieval, each tied to a category or ``null``.

``load_kb()`` reads and validates both and returns a :class:`KnowledgeBase`. Any problem raises
:class:`KBError` whose message names the file, the entry and the field, e.g.
``tools.yaml: Drill.primary_hazards: needs at least 3 items``.

The four contract fields of a :class:`ToolEntry` (``schema.SAFETY_FIELDS``) become training
targets verbatim, so their lengths are bounded here (see the ``MAX_*`` constants).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from safetyvlm.schema import CATEGORIES, SAFETY_FIELDS

__all__ = [
    "KBError",
    "KnowledgeBase",
    "Passage",
    "Reference",
    "ToolEntry",
    "DEFAULT_TOOLS_PATH",
    "DEFAULT_CORPUS_PATH",
    "load_kb",
]

KB_DIR = Path(__file__).parent
DEFAULT_TOOLS_PATH = KB_DIR / "tools.yaml"
DEFAULT_CORPUS_PATH = KB_DIR / "corpus.yaml"

# Length limits (words are whitespace-separated tokens).
MAX_FUNCTION_WORDS = 14
MAX_HAZARD_WORDS = 8
MAX_MISUSE_WORDS = 10
MAX_PPE_WORDS = 10
MIN_PASSAGE_WORDS = 60
MAX_PASSAGE_WORDS = 150
# Corpus coverage (checked when load_kb(strict=True), the default).
MIN_PASSAGES_PER_CATEGORY = 3
MIN_GENERAL_PASSAGES = 8


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


# ----------------------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KBError(f"{path.name}: cannot read {path}: {exc}") from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise KBError(f"{path.name}: invalid YAML: {exc}") from exc


_PLAIN_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
}


def _describe(err: dict[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "too_short" and "min_length" in ctx:
        n = ctx["min_length"]
        return f"needs at least {n} item{'s' if n != 1 else ''}"
    if kind == "too_long" and "max_length" in ctx:
        return f"allows at most {ctx['max_length']} items"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return _PLAIN_MESSAGES.get(kind, err["msg"])


def _format_errors(file: str, entry: str, exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        lines.append(f"{file}: {entry}{loc}: {_describe(err)}")
    return lines


def _raise(problems: list[str]) -> None:
    if problems:
        if len(problems) == 1:
            raise KBError(problems[0])
        raise KBError(f"{problems[0]} (and {len(problems) - 1} more)\n" + "\n".join(problems))


def _parse_tools(path: Path) -> tuple[dict[str, ToolEntry], dict[str, Reference]]:
    file = path.name
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise KBError(f"{file}: top level must be a mapping with 'tools' and 'references'")
    unknown_top = sorted(set(raw) - {"version", "tools", "references"})
    if unknown_top:
        raise KBError(f"{file}: unknown top-level keys {unknown_top} (expected tools, references)")
    raw_tools, raw_refs = raw.get("tools"), raw.get("references")
    if not isinstance(raw_tools, dict):
        raise KBError(f"{file}: 'tools' must be a mapping of category name -> entry")
    if not isinstance(raw_refs, dict) or not raw_refs:
        raise KBError(f"{file}: 'references' must be a non-empty mapping of id -> reference")

    problems: list[str] = []
    refs: dict[str, Reference] = {}
    for ref_id, body in raw_refs.items():
        if not isinstance(body, dict):
            problems.append(f"{file}: references.{ref_id}: must be a mapping")
            continue
        try:
            refs[str(ref_id)] = Reference.model_validate({**body, "id": str(ref_id)})
        except ValidationError as exc:
            problems += _format_errors(file, f"references.{ref_id}", exc)

    missing = [c for c in CATEGORIES if c not in raw_tools]
    if missing:
        problems.append(f"{file}: missing entries for categories: {', '.join(missing)}")
    tools: dict[str, ToolEntry] = {}
    for name, body in raw_tools.items():
        if name not in CATEGORIES:
            problems.append(
                f"{file}: {name}: unknown category "
                "(must be one of schema.CATEGORIES, spelled exactly)"
            )
            continue
        if not isinstance(body, dict):
            problems.append(f"{file}: {name}: entry must be a mapping")
            continue
        if "name" in body and body["name"] != name:
            problems.append(f"{file}: {name}.name: does not match its key ({body['name']!r})")
            continue
        try:
            entry = ToolEntry.model_validate({**body, "name": name})
        except ValidationError as exc:
            problems += _format_errors(file, name, exc)
            continue
        for ref_id in entry.references:
            if ref_id not in refs and ref_id not in raw_refs:
                problems.append(f"{file}: {name}.references: unknown reference id {ref_id!r}")
        tools[name] = entry
    _raise(problems)
    # Keep the canonical category order regardless of file order.
    return {c: tools[c] for c in CATEGORIES}, refs


def _parse_corpus(path: Path, refs: dict[str, Reference], strict: bool) -> list[Passage]:
    file = path.name
    raw = _read_yaml(path)
    if isinstance(raw, dict) and "passages" in raw:
        raw = raw["passages"]
    if not isinstance(raw, list) or not raw:
        raise KBError(f"{file}: must be a non-empty list of passages")

    problems: list[str] = []
    passages: list[Passage] = []
    first_seen: dict[str, int] = {}
    for i, body in enumerate(raw):
        if not isinstance(body, dict):
            problems.append(f"{file}: [{i}]: passage must be a mapping")
            continue
        label = str(body.get("id") or f"[{i}]")
        try:
            passage = Passage.model_validate(body)
        except ValidationError as exc:
            problems += _format_errors(file, label, exc)
            continue
        if passage.id in first_seen:
            problems.append(
                f"{file}: {passage.id}.id: duplicate passage id "
                f"(items {first_seen[passage.id]} and {i})"
            )
            continue
        first_seen[passage.id] = i
        for ref_id in passage.references:
            if ref_id not in refs:
                problems.append(f"{file}: {passage.id}.references: unknown reference id {ref_id!r}")
        passages.append(passage)

    if strict and not problems:
        counts = Counter(p.category for p in passages)
        for c in CATEGORIES:
            if counts[c] < MIN_PASSAGES_PER_CATEGORY:
                problems.append(
                    f"{file}: {c}: needs at least {MIN_PASSAGES_PER_CATEGORY} passages, "
                    f"has {counts[c]}"
                )
        if counts[None] < MIN_GENERAL_PASSAGES:
            problems.append(
                f"{file}: general (category null): needs at least {MIN_GENERAL_PASSAGES} "
                f"passages, has {counts[None]}"
            )
    _raise(problems)
    return passages


MANIFEST_NAME = "manifest.json"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_manifest(kb_dir: str | Path = KB_DIR) -> dict[str, str]:
    """Record the sha256 of every KB yaml file in `kb_dir/manifest.json` (after an intended edit)."""
    kb_dir = Path(kb_dir)
    hashes = {p.name: file_sha256(p) for p in sorted(kb_dir.glob("*.yaml"))}
    (kb_dir / MANIFEST_NAME).write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")
    return hashes


def verify_manifest(*paths: Path, require: bool = False) -> None:
    """Refuse a KB file whose sha256 differs from the manifest beside it (tampering or an unrecorded
    edit). Files in a directory without a manifest (a user's own KB) are not checked, unless `require`:
    the service passes it, so a deployment missing its manifest cannot serve an unchecked KB."""
    for path in paths:
        manifest = path.parent / MANIFEST_NAME
        if not manifest.exists():
            if require:
                raise KBError(f"{path}: no {MANIFEST_NAME} beside it, so its integrity cannot be checked; ship "
                              f"the manifest (`safetyvlm kb rehash` writes it) or, in development only, set "
                              f"SAFETYVLM_KB_VERIFY=off")
            continue
        expected = json.loads(manifest.read_text()).get(path.name)
        if expected is None:
            raise KBError(f"{path}: not listed in {manifest}; run `safetyvlm kb rehash` after an intended edit")
        actual = file_sha256(path)
        if actual != expected:
            raise KBError(f"{path}: sha256 {actual[:12]}… does not match {manifest} ({expected[:12]}…): the file "
                          "was changed outside review. If the edit is intended, run `safetyvlm kb rehash`.")


VERIFY_MODES = ("auto", "require", "skip")


def _load(tools_path: Path, corpus_path: Path, strict: bool, verify: str = "auto") -> KnowledgeBase:
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    if verify != "skip":
        verify_manifest(tools_path, corpus_path, require=verify == "require")
    tools, refs = _parse_tools(tools_path)
    corpus = _parse_corpus(corpus_path, refs, strict)
    return KnowledgeBase(tools=tools, references=refs, corpus=corpus)


@functools.lru_cache(maxsize=3)
def _load_default(verify: str = "auto") -> KnowledgeBase:
    return _load(DEFAULT_TOOLS_PATH, DEFAULT_CORPUS_PATH, strict=True, verify=verify)


def load_kb(
    tools_path: str | Path | None = None,
    corpus_path: str | Path | None = None,
    *,
    strict: bool = True,
    verify: str = "auto",
) -> KnowledgeBase:
    """Load and validate the knowledge base; raises :class:`KBError` on any problem.

    With no paths, the packaged ``tools.yaml`` and ``corpus.yaml`` are used and the result is
    cached (treat it as read-only). ``strict`` also requires corpus coverage: at least
    ``MIN_PASSAGES_PER_CATEGORY`` passages per category and ``MIN_GENERAL_PASSAGES`` general ones;
    pass ``strict=False`` to load a small custom corpus. ``verify``: ``"auto"`` checks the hash
    manifest when one sits beside the files, ``"require"`` also refuses a KB without one (the
    service), ``"skip"`` checks nothing (the service's development switch, SAFETYVLM_KB_VERIFY=off).
    """
    if tools_path is None and corpus_path is None and strict:
        return _load_default(verify)
    return _load(
        Path(tools_path) if tools_path is not None else DEFAULT_TOOLS_PATH,
        Path(corpus_path) if corpus_path is not None else DEFAULT_CORPUS_PATH,
        strict,
        verify,
    )


def ground_report(report, kb: KnowledgeBase | None = None):
    """A copy of `report` (a `schema.SafetyReport`) whose safety fields are the knowledge-base entry of
    each tool's name, selected by that name (an id), never taken from the model's text: a model misled
    by text in the image, or by a planted passage, can then mislabel a tool but never invent advice.
    `sources` become the ids of the tool's corpus passages."""
    kb = kb or load_kb()
    tools = []
    for tool in report.tools:
        fields = kb.safety_fields(tool.name)
        tools.append(tool.model_copy(update={**fields, "sources": [p.id for p in kb.passages_for(tool.name)]}))
    return report.model_copy(update={"tools": tools})
