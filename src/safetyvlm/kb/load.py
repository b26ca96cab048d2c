"""Read `tools.yaml` and `corpus.yaml`, validate them into a `KnowledgeBase`, with errors that name the file,
the entry and the field."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from safetyvlm.kb.entries import KBError, KnowledgeBase, Passage, Reference, ToolEntry
from safetyvlm.kb.manifest import KB_DIR, verify_manifest
from safetyvlm.schema import CATEGORIES

DEFAULT_TOOLS_PATH = KB_DIR / "tools.yaml"
DEFAULT_CORPUS_PATH = KB_DIR / "corpus.yaml"
# Corpus coverage (checked when load_kb(strict=True), the default).
MIN_PASSAGES_PER_CATEGORY = 3
MIN_GENERAL_PASSAGES = 8


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
