"""The base pretraining mixture's text: what a general instruct VLM knows before it meets this project.

A real Qwen2.5-VL-7B-Instruct, asked the report prompt, boxes most tools and answers in valid JSON with
plausible safety text *in its own words*; it has never read `kb/tools.yaml`. The tiny bases are trained to
behave the same way, so that fine-tuning (the knowledge base's wording) and retrieval (the passages) each
have something real to add. Everything here is drawn from the retrieval corpus (`kb/corpus.yaml`), never
from the knowledge base's contract fields, and a phrase that happens to equal one of them is dropped.

- `SafetyPhrases`: per category, pools of function sentences, PPE, hazard and misuse phrases cut out of
  that category's corpus passages (PPE also from the general shop-safety passages).
- `generic_report_text`: a report answer for a scene, fields sampled from those pools, key order of the
  output contract, boxes already in the model's frame.
- `scene_passages`: the passages a retrieval prompt would carry for a scene's tools, so a base also
  meets the report prompt with passages in it (as the pipeline's "+ RAG" rows and the service ask it)
  and learns to cite them in `sources`; a real instruct VLM reads context it is given.
- `prose_documents`: plain text for the language side: the corpus passages, and sentences that tie the
  parser's synonyms to the category names ("A pipe wrench is a kind of Gas wrench.").

Torch-free: the pretraining loop and the tests import it alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from safetyvlm.kb import KnowledgeBase, load_kb
from safetyvlm.parse import SYNONYMS
from safetyvlm.schema import CATEGORIES

# PPE as a worker names it; a category gets each one its passages (or the general ones) mention.
PPE_TERMS = (
    "safety glasses", "goggles", "face shield", "work gloves", "cut-resistant gloves", "gloves",
    "hearing protection", "earplugs", "earmuffs", "dust mask", "respirator", "safety boots",
    "steel-toe boots", "heat-resistant gloves", "close-fitting clothing", "apron",
)
_HAZARD_WORDS = re.compile(
    r"\b(injur\w*|cut\w*|lacerat\w*|burn\w*|fly\w*|flying|slip\w*|strain\w*|shock\w*|pinch\w*|crush\w*|"
    r"kick\w*|snap\w*|break\w*|shatter\w*|fire|fumes?|noise|vibration|splinter\w*|puncture\w*|"
    r"caught|entangle\w*|hazard\w*|danger\w*|fall\w*|round\w* off)\b", re.I)
_MISUSE_WORDS = re.compile(r"\b(never|avoid|misuse\w*|as a (hammer|pry bar|pry|lever|chisel|punch))\b", re.I)
# What a general model says of any tool's misuse, beside what the category's passages give.
GENERIC_MISUSES = ("using it for a job it was not made for", "working with a worn or damaged tool")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if len(s.split()) >= 4]


def _clause(sentence: str, max_words: int, pattern: re.Pattern | None = None) -> str:
    """The sentence's first clause (that matches `pattern`, from the match on), at most `max_words`
    words, lower-cased start, no end punctuation."""
    clauses = re.split(r"[;:,]\s+|\s+-\s+|\(|\bso that\b|\bbecause\b|\bwhile\b", sentence)
    clause = clauses[0]
    if pattern is not None:
        hits = [(c, pattern.search(c)) for c in clauses]
        hits = [(c, m) for c, m in hits if m]
        if not hits:
            return ""
        c, m = hits[0]
        clause = c[m.start():] if m.group(0).lower() in ("never", "avoid", "not") else c
    words = clause.strip(" .!?").split()[:max_words]
    if not words:
        return ""
    if not (len(words[0]) > 1 and words[0].isupper()):  # keep acronyms such as "PPE"
        words[0] = words[0][0].lower() + words[0][1:]
    return " ".join(words)


@dataclass(frozen=True)
class SafetyPhrases:
    functions: tuple[str, ...]
    ppe: tuple[str, ...]
    hazards: tuple[str, ...]
    misuses: tuple[str, ...]


def safety_phrases(kb: KnowledgeBase | None = None) -> dict[str, SafetyPhrases]:
    """Per category, the pools `generic_report_text` samples from (deterministic)."""
    kb = kb or load_kb()
    kb_phrases = {p.lower() for name in kb.tools for v in kb.safety_fields(name).values()
                  for p in (v if isinstance(v, list) else [v])}
    general = " ".join(p.text for p in kb.passages_for(None)).lower()
    out = {}
    for name in CATEGORIES:
        passages = kb.passages_for(name)
        text = " ".join(p.text for p in passages)
        sentences = [s for p in passages for s in _sentences(p.text)]
        own = text.lower()
        ppe = [t for t in PPE_TERMS if t in own] or [t for t in PPE_TERMS if t in general][:3]

        def keep(items, max_words, pattern):
            seen, pool = set(), []
            for s in items:
                c = _clause(s, max_words, pattern)
                if len(c.split()) >= 3 and c.lower() not in kb_phrases and c.lower() not in seen:
                    seen.add(c.lower())
                    pool.append(c)
            return tuple(pool)

        # a function sentence: a whole short sentence, else its first clause (never cut mid-phrase)
        functions = tuple(dict.fromkeys(
            f[0].upper() + f[1:] + "."
            for f in (s.rstrip(".") if len(s.split()) <= 18 else _clause(s, 18) for s in sentences[:8])
            if len(f.split()) >= 5 and len(f.split()) <= 18 and f.lower() not in kb_phrases
        ))
        hazards = keep(sentences, 8, _HAZARD_WORDS)
        misuses = keep(sentences, 10, _MISUSE_WORDS) + GENERIC_MISUSES
        out[name] = SafetyPhrases(functions or (f"A {name.lower()} used at the workbench.",),
                                  tuple(p for p in ppe if p not in kb_phrases) or ("safety glasses",),
                                  hazards or ("injury from careless handling",),
                                  misuses or ("using it for a job it was not made for",))
    return out


def _sample(rng: np.random.Generator, pool: tuple[str, ...], lo: int, hi: int) -> list[str]:
    n = min(len(pool), int(rng.integers(lo, hi + 1)))
    return [pool[int(i)] for i in sorted(rng.choice(len(pool), size=n, replace=False))]


# Passages in a retrieval prompt: the rag stage's default k (params.yaml rag.retrieve.k). A literal, not
# rag.config's default: importing it would make the base stage depend on the rag package.
PROMPT_PASSAGES = 3


def scene_passages(names: list[str], kb: KnowledgeBase, rng: np.random.Generator,
                   k: int = PROMPT_PASSAGES) -> list[dict]:
    """The `{id, text, category}` passages a retrieval prompt would carry for a scene's tools: the scene's
    categories' own passages in turn, up to `k`, and half the time the last one swapped for a passage of
    another category or a general one (a retriever brings those too, and a first pass can name a tool
    wrongly, so a passage must never become a name on its own); shuffled."""
    cats = list(dict.fromkeys(names))
    own = {}
    for c in cats:
        ps = kb.passages_for(c)
        own[c] = [ps[int(i)] for i in rng.permutation(len(ps))]
    picked = []
    for i in range(k):
        pool = own[cats[i % len(cats)]] if cats else []
        if pool:
            picked.append(pool.pop(0))
    if not cats or rng.random() < 0.5:
        others = [p for p in kb.corpus if p.category not in cats and p not in picked]
        other = others[int(rng.integers(len(others)))]
        picked = picked[:k - 1] + [other]  # the last of k swapped, or one added to fewer
    return [{"id": p.id, "text": " ".join(p.text.split()), "category": p.category}
            for p in (picked[int(i)] for i in rng.permutation(len(picked)))]


def generic_report_text(tools: list[dict], phrases: dict[str, SafetyPhrases], rng: np.random.Generator,
                        passages: list[dict] | None = None) -> str:
    """A report answer in the contract's key order; `tools` carry names and model-frame boxes. With the
    prompt's `passages` (`scene_passages`), each tool cites its own category's among them in `sources`."""
    out = []
    for tool in tools:
        p = phrases[tool["name"]]
        cited = {} if passages is None else {"sources": [x["id"] for x in passages if x["category"] == tool["name"]]}
        out.append({
            "name": tool["name"],
            "bbox_2d": tool["bbox_2d"],
            "primary_function": p.functions[int(rng.integers(len(p.functions)))],
            "required_ppe": _sample(rng, p.ppe, 1, 3),
            "primary_hazards": _sample(rng, p.hazards, 2, 3),
            "common_misuses": _sample(rng, p.misuses, 1, 2),
            **cited,
        })
    return json.dumps({"tools": out}, ensure_ascii=False, separators=(", ", ": "))


def prose_documents(kb: KnowledgeBase | None = None) -> list[str]:
    """Plain text for language-only batches: the corpus passages and the synonyms of each category."""
    kb = kb or load_kb()
    docs = [f"{p.title}. {' '.join(p.text.split())}" for p in kb.corpus]
    for name in CATEGORIES:
        for alias in SYNONYMS[name]:
            docs.append(f"A {alias} is a kind of {name}. In a workshop inventory it is listed as {name}.")
    return docs
