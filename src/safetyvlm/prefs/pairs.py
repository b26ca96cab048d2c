"""Preference pairs: the fine-tuned model's answer with retrieval (chosen) vs without (rejected).

Only train-split images are used (valid is for model selection, test for the eval stage). Each image
is answered by `answer_with_retrieval`, whose first pass *is* the plain answer without retrieval, so
one call gives both sides. Both are scored with `AnswerScorer` (verifiable checks against the
ground truth and the knowledge base) and a pair is kept only when chosen beats rejected by `margin`.

The stored prompt is the inference prompt *without* passages: DPO then teaches the model to give
the retrieval-quality answer when no passages are there. The chosen answer drops its `sources` (they
cite passages the stored prompt does not contain); a readable answer is re-serialised in the exact
training-target format, an unreadable one is kept as the model wrote it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from safetyvlm.answer.retrieval import answer_with_retrieval
from safetyvlm.kb import load_kb
from safetyvlm.model.boxes import model_frame
from safetyvlm.model.generate import check_cache
from safetyvlm.model.prompts import assistant_message, build_messages
from safetyvlm.parse import parse_report
from safetyvlm.prefs.rewards import REWARD_NAMES, AnswerScorer, default_weights

log = logging.getLogger("safetyvlm.prefs")
# the pair dataset's columns (TRL's VLM DPO format, then the row and both scores)
PAIR_COLUMNS = ("images", "prompt", "chosen", "rejected", "row", "chosen_score", "rejected_score")


@dataclass
class PairsConfig:
    """params.yaml `grpo.pairs`."""

    images: int | None = 120        # train-split images to answer twice (None: all)
    margin: float = 0.02            # keep a pair only if chosen's total beats rejected's by this much
    batch_size: int = 60
    max_new_tokens: int = 400
    cache: str = "static"           # the KV cache of both passes (eval.cache says why)
    weights: dict[str, float] = field(default_factory=default_weights)

    def __post_init__(self):
        check_cache(self.cache, "grpo.pairs.cache")


def without_sources(text: str, image_size, frame) -> str:
    """`text` in the training-target format with no `sources` (unchanged if it holds no JSON report); its boxes
    stay in the model's frame, as a training target's do."""
    parsed = parse_report(text or "", image_size=frame.extent(image_size))
    if not parsed.json_ok or not parsed.report.tools:
        return text
    return parsed.report.to_json(with_sources=False)


def _distribution(values: Sequence[float]) -> dict:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"n": 0}
    q = np.percentile(a, [10, 50, 90])
    return {"n": int(a.size), "mean": float(a.mean()), "p10": float(q[0]), "p50": float(q[1]),
            "p90": float(q[2])}


def score_answers(model, processor, family: str, split, retriever, cfg: PairsConfig, kb=None) -> list[dict]:
    """Answer the first `cfg.images` rows with and without retrieval; one scored record per image."""
    kb = kb or load_kb()
    frame = model_frame(family, processor)
    scorer = AnswerScorer(frame, kb, cfg.weights, max_chars=4 * cfg.max_new_tokens)
    n = len(split) if cfg.images is None else min(cfg.images, len(split))
    rows = split.select(range(n))
    images = [r["image"] for r in rows]
    answers = []
    # batch by batch (the same batches as one call), so a long stage shows how far it is
    with tqdm(total=n, desc=f"pairs {family}", unit="img", mininterval=5) as bar:
        for start in range(0, n, cfg.batch_size):
            chunk = images[start:start + cfg.batch_size]
            answers += answer_with_retrieval(model, processor, chunk, retriever, max_new_tokens=cfg.max_new_tokens,
                                             batch_size=cfg.batch_size, cache=cfg.cache)
            bar.update(len(chunk))
    records = []
    for i, (row, ans) in enumerate(zip(rows, answers)):
        size = row["image"].size
        records.append({
            "row": i, "image": row["image"],
            "chosen": without_sources(ans.text, size, frame), "rejected": ans.first_pass_text,
            "chosen_scores": scorer.scores(ans.text, row["instances"], size),
            "rejected_scores": scorer.scores(ans.first_pass_text, row["instances"], size),
        })
    return records


def select_pairs(records: list[dict], margin: float, family: str = ""):
    """(a `datasets.Dataset` of the pairs whose chosen total beats rejected's by `margin`, metrics).

    Columns: `images`, `prompt`, `chosen`, `rejected` (what TRL's `DPOTrainer` reads for VLMs) plus
    `row` (index in the split) and `chosen_score` / `rejected_score` (the weighted totals).
    """
    from datasets import Dataset

    gains = [r["chosen_scores"]["total"] - r["rejected_scores"]["total"] for r in records]
    kept = [{"images": [r["image"]], "prompt": build_messages(), "chosen": [assistant_message(r["chosen"])],
             "rejected": [assistant_message(r["rejected"])], "row": r["row"],
             "chosen_score": r["chosen_scores"]["total"], "rejected_score": r["rejected_scores"]["total"]}
            for r, g in zip(records, gains) if g >= margin]
    n = len(records)
    metrics = {
        "family": family, "images": n, "kept": len(kept), "dropped": n - len(kept),
        "kept_share": len(kept) / n if n else 0.0, "margin": margin,
        "chosen_total": _distribution([r["chosen_scores"]["total"] for r in records]),
        "rejected_total": _distribution([r["rejected_scores"]["total"] for r in records]),
        "gain": _distribution(gains),
        "chosen_better": int(sum(g > 0 for g in gains)),
        "rejected_better": int(sum(g < 0 for g in gains)),
        "per_reward_mean": {k: {side: float(np.mean([r[f"{side}_scores"][k] for r in records])) if records else None
                                for side in ("chosen", "rejected")} for k in REWARD_NAMES},
    }
    return (Dataset.from_list(kept) if kept else empty_pairs()), metrics


def empty_pairs():
    """A pair dataset with the columns and no row."""
    from datasets import Dataset

    return Dataset.from_dict({c: [] for c in PAIR_COLUMNS})


def load_pairs(path: str | Path):
    """The grpo-pairs stage's dataset at `path`. A set that kept no pair is saved with no data file, which
    `datasets.load_from_disk` cannot read back (IndexError); it loads here as an empty dataset."""
    from datasets import load_from_disk

    state = Path(path) / "state.json"
    if state.is_file() and not json.loads(state.read_text()).get("_data_files"):
        return empty_pairs()
    return load_from_disk(str(path))


def build_pairs(model, processor, family: str, split, retriever, cfg: PairsConfig, kb=None):
    """`score_answers` then `select_pairs` with `cfg.margin`: (pairs dataset, metrics)."""
    start = time.perf_counter()
    records = score_answers(model, processor, family, split, retriever, cfg, kb)
    dataset, metrics = select_pairs(records, cfg.margin, family)
    metrics.update(weights=dict(cfg.weights), seconds=round(time.perf_counter() - start, 1))
    log.info("%s: kept %d of %d pairs (chosen better %d, rejected better %d)", family, metrics["kept"],
             metrics["images"], metrics["chosen_better"], metrics["rejected_better"])
    return dataset, metrics
