"""The few numbers each stage declares as DVC metrics, under short keys that the stages share.

`dvc metrics show`, `dvc metrics diff` and `dvc exp show` put one column per metric key, so every stage
writes its full document to `metrics/detail/...` (an artifact for the docs and for people) and its headline
here: the union of keys over the whole pipeline stays small enough for a 200-column terminal
(`tests/test_headline.py` runs `dvc metrics show` and checks). Values are rounded to 3 decimals.
"""

from __future__ import annotations

import re
from pathlib import Path

from safetyvlm.io import atomic_write_json

# model-quality keys shared by the eval rows and the finetunes' valid-split scores
QUALITY = {"json": "json_valid", "name_f1": "name_f1", "det_f1": "f1", "iou": "mean_iou",
           "safety": "safety_agreement"}


def _round(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return round(value, 3)
    return value


def _safety(value):
    """Safety agreement is a number in the eval rows and {field: rate, "mean": rate} in the finetune."""
    return value.get("mean") if isinstance(value, dict) else value


def _quality(m: dict) -> dict:
    out = {k: m.get(src) for k, src in QUALITY.items()}
    out["safety"] = _safety(out["safety"])
    return out


def eval_row(m: dict) -> dict:
    """One family x condition of the eval stage (metrics/eval/<family>/<condition>.json)."""
    out = {**_quality(m), "halluc": m.get("claim_hallucination")}
    return {k: _round(v) for k, v in out.items()}


def finetune(doc: dict) -> dict:
    out = {**_quality(doc.get("valid") or {}), "loss": doc.get("final_loss")}
    return {k: _round(v) for k, v in out.items()}


def preference(doc: dict) -> dict:
    """The preference stage: its last logged loss and reward margin (DPO) or mean reward (GRPO)."""
    last = doc.get("last") or {}
    margin = last.get("rewards/margins", last.get("reward"))
    return {"loss": _round(last.get("loss")), "margin": _round(margin)}


def pairs(doc: dict) -> dict:
    return {"pairs": doc.get("kept")}


def rag(doc: dict) -> dict:
    return {"recall@5": _round(doc.get("recall@5")), "mrr": _round(doc.get("mrr"))}


def dataset(doc: dict) -> dict:
    total = doc.get("total") or {}
    return {"images": total.get("images"), "boxes": total.get("boxes")}


def condition_file(condition: str) -> str:
    """`ft vision+language · shifted` -> `ft-vision-language-shifted.json`."""
    return re.sub(r"[^a-z0-9]+", "-", condition.lower()).strip("-") + ".json"


def write(path: str | Path, headline: dict) -> Path:
    return atomic_write_json(path, headline)


def write_eval_rows(metrics: dict, directory: str | Path) -> list[Path]:
    """`{family: {condition: metrics}}` -> one headline file per row under `directory/<family>/`; files of
    rows that no longer exist are removed (the directory is the stage's metrics output)."""
    directory = Path(directory)
    written = []
    for family, conditions in metrics.items():
        for condition, m in conditions.items():
            written.append(write(directory / family / condition_file(condition), eval_row(m)))
    for stale in set(directory.glob("*/*.json")) - set(written):
        stale.unlink()
    return written
