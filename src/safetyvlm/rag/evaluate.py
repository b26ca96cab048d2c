"""Retrieval quality on a labelled query set built from the knowledge base: recall@k, hit@k and MRR.

Queries, per tool (category): its PPE, its function, safe use, each listed hazard ("hazard: kickback of
a Drill") and each common misuse. Relevant = the corpus passages of that tool's category.

* recall@k — share of a query's relevant passages among the top k (averaged over queries);
* hit@k — share of queries with at least one relevant passage in the top k;
* MRR — mean of 1 / rank of the first relevant passage (0 when none is retrieved).

The `boost` modes use the query's own tool as the "detected" tool, i.e. they measure retrieval given a
correct first-pass detection; `none` and `mmr` see the query text only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from safetyvlm.kb import KnowledgeBase

RERANK_MODES = {"none": (), "mmr": ("mmr",), "boost": ("boost",), "boost+mmr": ("boost", "mmr")}


@dataclass(frozen=True)
class LabelledQuery:
    text: str
    tool: str
    kind: str                     # ppe | function | usage | hazard | misuse
    relevant: frozenset[str]


def build_query_set(kb: KnowledgeBase) -> list[LabelledQuery]:
    queries: list[LabelledQuery] = []
    for name, entry in kb.tools.items():
        relevant = frozenset(p.id for p in kb.passages_for(name))
        if not relevant:
            continue
        q = [("ppe", f"What PPE do I need when using a {name}?"),
             ("function", f"What is a {name} used for?"),
             ("usage", f"How do I use a {name} safely?")]
        q += [("hazard", f"hazard: {h} of a {name}") for h in entry.primary_hazards]
        q += [("misuse", f"misuse: {m} with a {name}") for m in entry.common_misuses]
        queries += [LabelledQuery(text, name, kind, relevant) for kind, text in q]
    return queries


def recall_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    relevant = set(relevant)
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def hit_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    return float(bool(set(relevant).intersection(ranked[:k])))


def reciprocal_rank(ranked: Sequence[str], relevant: Iterable[str]) -> float:
    relevant = set(relevant)
    for i, pid in enumerate(ranked, start=1):
        if pid in relevant:
            return 1.0 / i
    return 0.0


def score_rankings(rankings: Sequence[Sequence[str]], relevants: Sequence[Iterable[str]],
                   ks: Sequence[int] = (1, 3, 5)) -> dict[str, float]:
    """Mean recall@k, hit@k (each k) and MRR over queries; `rankings[i]` are passage ids, best first."""
    if len(rankings) != len(relevants):
        raise ValueError(f"{len(rankings)} rankings for {len(relevants)} relevance sets")
    n = len(rankings)
    relevants = [set(r) for r in relevants]
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = sum(recall_at_k(r, rel, k) for r, rel in zip(rankings, relevants)) / max(n, 1)
    for k in ks:
        out[f"hit@{k}"] = sum(hit_at_k(r, rel, k) for r, rel in zip(rankings, relevants)) / max(n, 1)
    out["mrr"] = sum(reciprocal_rank(r, rel) for r, rel in zip(rankings, relevants)) / max(n, 1)
    return {key: round(v, 4) for key, v in out.items()}


def evaluate_retriever(retriever, queries: Sequence[LabelledQuery], ks: Sequence[int] = (1, 3, 5),
                       modes: Iterable[str] = tuple(RERANK_MODES)) -> dict:
    """Scores per rerank mode: `{mode: {recall@k..., hit@k..., mrr}}`, ranking `max(ks)` passages."""
    depth = max(ks)
    vectors = retriever.encode_queries([q.text for q in queries])  # once, shared by every mode
    out = {}
    for mode in modes:
        steps = RERANK_MODES[mode]
        rankings = []
        for q, v in zip(queries, vectors):
            boost = [q.tool] if "boost" in steps else []
            hits = retriever.search_by_vectors(v, k=depth, rerank=steps, boost_categories=boost)
            rankings.append([h.id for h in hits])
        out[mode] = score_rankings(rankings, [q.relevant for q in queries], ks)
    return out
