"""The packaged tool-safety knowledge base and its validating loader (safetyvlm.kb)."""

from __future__ import annotations

import copy
import itertools
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from safetyvlm.kb import (
    DEFAULT_CORPUS_PATH,
    DEFAULT_TOOLS_PATH,
    KBError,
    KnowledgeBase,
    Passage,
    ToolEntry,
    load_kb,
)
from safetyvlm.schema import CATEGORIES, SAFETY_FIELDS, ToolReport


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return load_kb()


@pytest.fixture(scope="module")
def raw_tools() -> dict:
    return yaml.safe_load(DEFAULT_TOOLS_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def raw_corpus() -> list:
    return yaml.safe_load(DEFAULT_CORPUS_PATH.read_text(encoding="utf-8"))


def _write(tmp_path: Path, tools: dict, corpus: list) -> tuple[Path, Path]:
    tools_path, corpus_path = tmp_path / "tools.yaml", tmp_path / "corpus.yaml"
    tools_path.write_text(yaml.safe_dump(tools, sort_keys=False, allow_unicode=True))
    corpus_path.write_text(yaml.safe_dump(corpus, sort_keys=False, allow_unicode=True))
    return tools_path, corpus_path


def _words(s: str) -> int:
    return len(s.split())


# ------------------------------------------------------------------------------ packaged contents


def test_packaged_kb_loads_and_is_cached(kb):
    assert isinstance(kb, KnowledgeBase)
    assert load_kb() is kb


def test_covers_exactly_the_17_categories_in_order(kb):
    assert list(kb.tools) == list(CATEGORIES)
    assert len(kb.tools) == 17
    for name, entry in kb.tools.items():
        assert isinstance(entry, ToolEntry)
        assert entry.name == name


@pytest.mark.parametrize("name", CATEGORIES)
def test_entry_field_counts_and_lengths(kb, name):
    e = kb.tool(name)
    assert e.primary_function and _words(e.primary_function) <= 14
    assert 3 <= len(e.usage_instructions) <= 5
    assert 2 <= len(e.required_ppe) <= 4
    assert len(e.primary_hazards) >= 3
    assert all(_words(h) <= 8 for h in e.primary_hazards)
    assert len(e.common_misuses) >= 2
    assert all(_words(m) <= 10 for m in e.common_misuses)
    assert e.maintenance and e.storage
    assert e.references


@pytest.mark.parametrize("name", CATEGORIES)
def test_safety_fields_make_a_valid_tool_report(kb, name):
    fields = kb.safety_fields(name)
    assert tuple(fields) == SAFETY_FIELDS
    report = ToolReport(name=name, bbox_2d=[0, 0, 10, 10], **fields)
    assert report.primary_hazards == kb.tool(name).primary_hazards


def test_safety_fields_returns_copies(kb):
    fields = kb.safety_fields("Drill")
    fields["primary_hazards"].append("mutated")
    assert "mutated" not in kb.tool("Drill").primary_hazards


def test_unknown_tool_raises_clear_keyerror(kb):
    with pytest.raises(KeyError, match="Chainsaw"):
        kb.tool("Chainsaw")
    with pytest.raises(KeyError, match="Chainsaw"):
        kb.safety_fields("Chainsaw")


def test_gun_and_hand_entries_say_what_they_are(kb):
    gun = kb.tool("Gun")
    gun_text = " ".join([gun.description, gun.primary_function, *gun.usage_instructions]).lower()
    assert "power gun" in gun_text
    for kind in ("glue", "heat", "nail"):
        assert kind in gun.primary_function.lower()
    hand = kb.tool("Hand")
    hand_parts = [hand.description, hand.primary_function, *hand.usage_instructions]
    hand_text = " ".join(hand_parts).lower()
    assert "worker's hand" in hand_text
    assert "pinch" in hand_text and "cut" in hand_text
    assert any("glove" in p for p in hand.required_ppe)


def test_hazards_and_misuses_are_tool_specific(kb):
    entries = list(kb.tools.values())
    for a, b in itertools.combinations(entries, 2):
        assert a.primary_hazards != b.primary_hazards, (a.name, b.name)
        assert a.common_misuses != b.common_misuses, (a.name, b.name)
    # Every tool has at least one hazard phrase that no other tool uses.
    counts = Counter(h.lower() for e in entries for h in e.primary_hazards)
    for e in entries:
        assert any(counts[h.lower()] == 1 for h in e.primary_hazards), e.name


def test_references_resolve_and_look_real(kb):
    for e in kb.tools.values():
        assert set(e.references) <= set(kb.references), e.name
    for p in kb.corpus:
        assert set(p.references) <= set(kb.references), p.id
    for ref_id, ref in kb.references.items():
        assert ref.url.startswith("https://"), ref_id
        assert ref.title and ref.publisher
    ids = set(kb.references)
    for required in ("osha-3080", "cfr-1910-242", "cfr-1910-243", "cfr-1910-132",
                     "cfr-1910-133", "cfr-1910-138", "ansi-z87-1", "ansi-isea-105"):
        assert required in ids


def test_corpus_coverage_and_ids(kb):
    ids = [p.id for p in kb.corpus]
    assert len(ids) == len(set(ids))
    counts = Counter(p.category for p in kb.corpus)
    for c in CATEGORIES:
        assert counts[c] >= 3, c
    assert counts[None] >= 8
    assert set(counts) <= set(CATEGORIES) | {None}
    for p in kb.corpus:
        assert 60 <= _words(p.text) <= 150, p.id
    # Different documents within a category really differ.
    for c in CATEGORIES:
        texts = [p.text for p in kb.passages_for(c)]
        assert len(set(texts)) == len(texts)


def test_passage_lookup(kb):
    drill = kb.passages_for("Drill")
    assert drill and all(isinstance(p, Passage) and p.category == "Drill" for p in drill)
    general = kb.passages_for(None)
    assert len(general) >= 8 and all(p.category is None for p in general)
    first = kb.corpus[0]
    assert kb.passage(first.id) is first
    with pytest.raises(KeyError, match="no-such-passage"):
        kb.passage("no-such-passage")
    with pytest.raises(KeyError, match="Chainsaw"):
        kb.passages_for("Chainsaw")


def test_explicit_paths_load_like_default(tmp_path, raw_tools, raw_corpus, kb):
    other = load_kb(*_write(tmp_path, raw_tools, raw_corpus))
    assert other is not kb
    assert other.tools == kb.tools and other.corpus == kb.corpus


def test_non_strict_allows_small_corpus(tmp_path, raw_tools, raw_corpus):
    small = [p for p in raw_corpus if p["category"] == "Drill"]
    tools_path, corpus_path = _write(tmp_path, raw_tools, small)
    with pytest.raises(KBError, match="needs at least 3 passages"):
        load_kb(tools_path, corpus_path)
    assert len(load_kb(tools_path, corpus_path, strict=False).corpus) == len(small)


# ------------------------------------------------------------------------------ invalid files


def _tools_error(tmp_path, raw_tools, raw_corpus, mutate) -> str:
    tools = copy.deepcopy(raw_tools)
    mutate(tools)
    with pytest.raises(KBError) as info:
        load_kb(*_write(tmp_path, tools, raw_corpus))
    return str(info.value)


def _corpus_error(tmp_path, raw_tools, raw_corpus, mutate) -> str:
    corpus = copy.deepcopy(raw_corpus)
    mutate(corpus)
    with pytest.raises(KBError) as info:
        load_kb(*_write(tmp_path, raw_tools, corpus))
    return str(info.value)


def test_missing_category(tmp_path, raw_tools, raw_corpus):
    msg = _tools_error(tmp_path, raw_tools, raw_corpus, lambda t: t["tools"].pop("Ratchet"))
    assert msg.startswith("tools.yaml:")
    assert "missing" in msg and "Ratchet" in msg


def test_unknown_category_in_tools(tmp_path, raw_tools, raw_corpus):
    def add(t):
        t["tools"]["Chainsaw"] = copy.deepcopy(t["tools"]["Handsaw"])

    msg = _tools_error(tmp_path, raw_tools, raw_corpus, add)
    assert "tools.yaml: Chainsaw: unknown category" in msg


def test_too_few_hazards(tmp_path, raw_tools, raw_corpus):
    def cut(t):
        t["tools"]["Drill"]["primary_hazards"] = t["tools"]["Drill"]["primary_hazards"][:2]

    msg = _tools_error(tmp_path, raw_tools, raw_corpus, cut)
    assert "tools.yaml: Drill.primary_hazards: needs at least 3 items" in msg


def test_too_few_misuses_and_missing_field(tmp_path, raw_tools, raw_corpus):
    def cut(t):
        t["tools"]["Hammer"]["common_misuses"] = ["only one"]
        del t["tools"]["Pliers"]["storage"]

    msg = _tools_error(tmp_path, raw_tools, raw_corpus, cut)
    assert "tools.yaml: Hammer.common_misuses: needs at least 2 items" in msg
    assert "tools.yaml: Pliers.storage: required field is missing" in msg


def test_overlong_hazard_is_rejected(tmp_path, raw_tools, raw_corpus):
    def lengthen(t):
        long_phrase = "a hazard phrase that is far too long to be a target"
        t["tools"]["Wrench"]["primary_hazards"][0] = long_phrase

    msg = _tools_error(tmp_path, raw_tools, raw_corpus, lengthen)
    assert "tools.yaml: Wrench.primary_hazards: item 0" in msg and "at most 8" in msg


def test_unknown_field_is_rejected(tmp_path, raw_tools, raw_corpus):
    def typo(t):
        t["tools"]["Calipers"]["primary_hazard"] = ["typo"]

    msg = _tools_error(tmp_path, raw_tools, raw_corpus, typo)
    assert "tools.yaml: Calipers.primary_hazard: unknown field" in msg


def test_unknown_reference_in_tools(tmp_path, raw_tools, raw_corpus):
    def bad_ref(t):
        t["tools"]["Screwdriver"]["references"].append("not-a-reference")

    msg = _tools_error(tmp_path, raw_tools, raw_corpus, bad_ref)
    assert "tools.yaml: Screwdriver.references: unknown reference id 'not-a-reference'" in msg


def test_unknown_reference_in_corpus(tmp_path, raw_tools, raw_corpus):
    def bad_ref(c):
        c[0]["references"] = ["not-a-reference"]

    msg = _corpus_error(tmp_path, raw_tools, raw_corpus, bad_ref)
    assert f"corpus.yaml: {raw_corpus[0]['id']}.references: unknown reference id" in msg


def test_duplicate_corpus_id(tmp_path, raw_tools, raw_corpus):
    def dup(c):
        c[5]["id"] = c[4]["id"]

    msg = _corpus_error(tmp_path, raw_tools, raw_corpus, dup)
    assert f"corpus.yaml: {raw_corpus[4]['id']}.id: duplicate passage id" in msg


def test_unknown_corpus_category(tmp_path, raw_tools, raw_corpus):
    def bad_cat(c):
        c[3]["category"] = "Chainsaw"

    msg = _corpus_error(tmp_path, raw_tools, raw_corpus, bad_cat)
    assert f"corpus.yaml: {raw_corpus[3]['id']}.category: unknown category 'Chainsaw'" in msg


def test_short_passage_text(tmp_path, raw_tools, raw_corpus):
    def shorten(c):
        c[2]["text"] = "Too short."

    msg = _corpus_error(tmp_path, raw_tools, raw_corpus, shorten)
    assert f"corpus.yaml: {raw_corpus[2]['id']}.text: has 2 words" in msg


def test_duplicate_yaml_key_and_bad_yaml(tmp_path, raw_corpus):
    text = DEFAULT_TOOLS_PATH.read_text(encoding="utf-8")
    dup = text.replace("  Backsaw:\n", "  Adjustable spanner:\n", 1)
    tools_path = tmp_path / "tools.yaml"
    tools_path.write_text(dup)
    with pytest.raises(KBError, match="duplicate key 'Adjustable spanner'"):
        load_kb(tools_path)
    tools_path.write_text("tools: [unclosed\n")
    with pytest.raises(KBError, match="tools.yaml: invalid YAML"):
        load_kb(tools_path)
    with pytest.raises(KBError, match="cannot read"):
        load_kb(tmp_path / "missing.yaml")


def test_kberror_is_valueerror():
    assert issubclass(KBError, ValueError)


def test_the_service_mode_requires_a_matching_manifest(tmp_path):
    """verify="require" (what the service uses) refuses a KB with no manifest beside it, or one that does
    not match; "auto" keeps accepting a user's own KB without one; "skip" is the development switch."""
    from safetyvlm.kb import DEFAULT_CORPUS_PATH, write_manifest

    tools, corpus = tmp_path / "tools.yaml", tmp_path / "corpus.yaml"
    shutil.copy(DEFAULT_TOOLS_PATH, tools)
    shutil.copy(DEFAULT_CORPUS_PATH, corpus)
    assert len(load_kb(tools, corpus).tools) == 17                        # auto: no manifest, not checked
    with pytest.raises(KBError, match="no manifest.json beside it.*SAFETYVLM_KB_VERIFY=off"):
        load_kb(tools, corpus, verify="require")
    write_manifest(tmp_path)
    assert len(load_kb(tools, corpus, verify="require").tools) == 17
    tools.write_text(tools.read_text().replace("safety glasses (ANSI Z87.1)", "none needed", 1))
    with pytest.raises(KBError, match="does not match"):
        load_kb(tools, corpus, verify="require")
    assert load_kb(tools, corpus, verify="skip").tools                     # development switch only
    with pytest.raises(ValueError, match="verify must be one of"):
        load_kb(tools, corpus, verify="sometimes")
