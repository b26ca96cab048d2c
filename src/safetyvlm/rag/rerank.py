"""Reranking steps applied to retrieved candidates: a category boost and maximal marginal relevance.

Both work on plain arrays so they are store-agnostic: `boost_scores` lifts the candidates whose category
was detected in the image, and `mmr_select` then trades relevance (the boosted score) against similarity
to what is already selected. (LangChain's `maximal_marginal_relevance` recomputes relevance from the
vectors, which would undo the boost, hence this version.)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np


def boost_scores(scores: Sequence[float], categories: Sequence[str | None], detected: Collection[str],
                 boost: float) -> list[float]:
    """`score + boost` where the candidate's category is one of the detected tools."""
    detected = set(detected)
    return [float(s) + (boost if c is not None and c in detected else 0.0) for s, c in zip(scores, categories)]


def mmr_select(relevance: Sequence[float], vectors, k: int, lambda_mult: float = 0.5) -> list[int]:
    """Indices of `k` candidates in MMR order: argmax λ·rel(i) − (1−λ)·max_j∈selected cos(i, j).

    `vectors` are the candidates' normalised embeddings (rows), so a dot product is the cosine.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    n = len(rel)
    k = min(k, n)
    if k <= 0:
        return []
    v = np.asarray(vectors, dtype=np.float64).reshape(n, -1)
    sim = v @ v.T
    selected = [int(np.argmax(rel))]
    max_sim = sim[selected[0]].copy()
    chosen = np.zeros(n, dtype=bool)
    chosen[selected[0]] = True
    while len(selected) < k:
        score = lambda_mult * rel - (1.0 - lambda_mult) * max_sim
        score[chosen] = -np.inf
        i = int(np.argmax(score))
        selected.append(i)
        chosen[i] = True
        max_sim = np.maximum(max_sim, sim[i])
    return selected
