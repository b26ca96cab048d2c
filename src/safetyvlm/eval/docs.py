"""`docs/results.md`: the tables of measured figures, generated from the metrics files, never copied by hand.

`python -m safetyvlm.eval.docs` (the `results-doc` stage of dvc.yaml, after every stage whose metrics
it reads) writes it from `metrics/detail/eval.json`, `metrics/detail/finetune/*.json` and `metrics/detail/rag.json`;
`--check` exits 1 when the file on disk differs from what the metrics give, as
`tests/test_results_doc.py` does for the committed one. A figure in the docs then cannot go stale.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from safetyvlm.eval.report import (
    COMPARISON_NOTE,
    SCORED_NOTE,
    SHIFTED_SUFFIX,
    _cell,
    _write_text,
    comparisons_table,
    main_table,
    results_table,
)

DOC_PATH = Path("docs/results.md")
STRATEGY_ORDER = ("vision", "language", "vision_language")

HEADER = """# Measured results

Generated from the metrics files by `python -m safetyvlm.eval.docs` (the `results-doc` stage of
`dvc.yaml`, so `dvc repro` keeps it current); `tests/test_results_doc.py` fails when this file differs
from what the committed metrics give. Do not edit it by hand: change the generator in
`src/safetyvlm/eval/docs.py`. Definitions of every column: README, *Evaluation (eval)*.
"""


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; run the stage that writes it (dvc repro)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None


def _para(text: str) -> str:
    return textwrap.fill(text, 100) + "\n"


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * left + ["---:"] * (len(head) - left)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def eval_section(doc: dict, compared: list[dict] | None = None) -> str:
    """The eval stage's tables (`metrics/detail/eval.json`): headline columns with 95% bootstrap intervals, the
    paired comparisons (`metrics/detail/eval_comparisons.json`), all columns, and what the safety columns score."""
    sizes = sorted({m.get("n_images") for conds in doc.values() for m in conds.values()}, key=str)
    images = f"{sizes[0]} images per row" if len(sizes) == 1 else f"images per row: {sizes}"
    intro = _para(f"From `metrics/detail/eval.json`: {images}, greedy; rows ending in \"· shifted\" are on the shifted "
                  "test set (`dataset.shifted`: two surfaces never seen in training; harsher lighting, wider sizes and "
                  "more clutter than the training scenes and the bases' pretraining, ranges they extend and overlap). "
                  "Brackets: 95% bootstrap intervals over images.")
    parts = [f"## Evaluation (eval stage)\n\n{intro}\n{main_table(doc)}\n{SCORED_NOTE}"]
    if compared:
        parts.append("### Which differences are real\n\n" + comparisons_table(compared) + "\n" + COMPARISON_NOTE)
    parts.append("### All columns\n\n" + _para("Latency in seconds per image at batch 1.") + "\n" + results_table(doc))
    return "\n".join(parts)


# Issue 18's targets for the default pipeline: (metric, label, bound, higher is better)
ZERO_SHOT_TARGETS = (("json_valid", "JSON valid", 0.9, True), ("name_f1", "name F1", 0.8, True),
                     ("f1", "det F1 @0.5", 0.7, True))
FINETUNE_TARGETS = (("json_valid", "JSON valid", 0.97, True), ("name_f1", "name F1", 0.9, True),
                    ("f1", "det F1 @0.5", 0.8, True), ("mean_iou", "mean IoU", 0.75, True),
                    ("safety_agreement", "safety agreement", 0.9, True),
                    ("claim_hallucination", "claim hallucination", 0.10, False))
SHIFT_TOLERANCE = 0.1


def _verdict(value, bound: float, higher: bool) -> str:
    if value is None:
        return "no figure"
    gap = (bound - value) if higher else (value - bound)
    return "met" if gap <= 0 else f"missed by {gap:.3f}"


# Where a miss of the finetuned rows comes from, and what was tried against it
MISSED_NOTE = ("What was tried against these misses, with the figures: the bases' training segments in "
               "`models/shipped/PROVENANCE.md` (what the finetune starts from) and the finetune runs in "
               "[finetune-recipe.md](finetune-recipe.md) (steps, learning rates, output layer, detect replay, "
               "wider train renders, weight averages with the base).")


def _comparison(compared: list[dict], family: str, a: str, b: str, metric: str) -> dict | None:
    return next((c for c in compared if (c.get("family"), c.get("a"), c.get("b"), c.get("metric"))
                 == (family, a, b, metric)), None)


def _missed_section(misses: list[tuple[str, str, str, str, str]], compared: list[dict]) -> str:
    """One line per missed target of a finetuned row: its paired change against the bases answering zero-shot
    on the same images (the test set, or the shifted set for a shifted row): how much of the miss the
    finetune adds to what its base starts from."""
    lines = []
    for fam, row, key, label, verdict in misses:
        source = "zero-shot" + SHIFTED_SUFFIX if row.endswith(SHIFTED_SUFFIX) else "zero-shot"
        c = _comparison(compared, fam, row, source, key)
        change = (f"; {row} - {source} on the same images: {c['difference']:+.3f} "
                  f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]" if c and c.get("ci") else "")
        lines.append(f"- {fam}, {row}, {label}: {verdict}{change}")
    if not lines:
        return ""
    intro = _para("Where a finetuned row misses a target: its paired change (95% interval over images) against "
                  "the zero-shot row on the same images, i.e. how much the finetune loses or adds to the base "
                  "it starts from.")
    return f"\n### Where the finetuned rows miss\n\n{intro}\n" + "\n".join(lines) + "\n\n" + _para(MISSED_NOTE)


def targets_section(doc: dict, compared: list[dict] | None = None) -> str:
    """The default pipeline's targets against the eval rows: the zero-shot row (the bases), the best
    finetuned row (highest det F1 among the model's own answers) and that row on the shifted set."""
    head = ["family", "row", "metric", "target", "measured [95% CI]", "verdict"]
    rows, misses = [], []
    for fam, conds in doc.items():
        own = {c: m for c, m in conds.items() if not m.get("grounded") and not c.endswith(SHIFTED_SUFFIX)}
        checks = []
        if "zero-shot" in own:
            checks.append(("zero-shot", "zero-shot", own["zero-shot"], ZERO_SHOT_TARGETS))
        tuned = {c: m for c, m in own.items() if c != "zero-shot"}
        if tuned:
            best = max(tuned, key=lambda c: tuned[c].get("f1") or 0.0)
            checks.append((f"best finetuned: {best}", best, tuned[best], FINETUNE_TARGETS))
            shifted = conds.get(best + SHIFTED_SUFFIX)
            if shifted:
                shift_targets = tuple((k, label, bound - SHIFT_TOLERANCE if higher else bound + SHIFT_TOLERANCE, higher)
                                      for k, label, bound, higher in FINETUNE_TARGETS)
                checks.append((best + SHIFTED_SUFFIX, best + SHIFTED_SUFFIX, shifted, shift_targets))
        for name, cond, m, targets in checks:
            for key, label, bound, higher in targets:
                value = m.get(key)
                ci = (m.get("ci") or {}).get(key)
                shown = _cell(value, 3) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and value is not None else "")
                verdict = _verdict(value, bound, higher)
                rows.append([fam, name, label, f"{'>=' if higher else '<='} {bound:.2f}", shown, verdict])
                if verdict.startswith("missed") and cond != "zero-shot":
                    misses.append((fam, cond, key, label, verdict))
    intro = _para("The targets the default pipeline is held to (issue 18), against this run's rows: the bases "
                  "answering the report prompt zero-shot, the finetuned row with the highest det F1, and that "
                  f"row on the shifted test set (the same targets less {SHIFT_TOLERANCE}).")
    return f"## Targets\n\n{intro}\n{_table(head, rows, left=3)}" + _missed_section(misses, compared or [])


def finetune_section(runs: dict[str, dict], families: list[str]) -> str:
    """One row per finetune (`metrics/detail/finetune/<family>-<strategy>.json`), scored on valid images;
    families in the order given (the eval table's), then any other, strategies as in dvc.yaml."""
    def order(item):
        family, strategy = item[1].get("family"), item[1].get("strategy")
        return (families.index(family) if family in families else len(families), family or "",
                STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER), item[0])

    head = ["family", "strategy", "device", "steps", "train s", "final loss", "valid images", "JSON valid",
            "name F1", "det F1 @0.5", "mean IoU", "safety agreement (tools)"]
    rows = []
    for name, m in sorted(runs.items(), key=order):
        v = m.get("valid") or {}
        safety = v.get("safety_agreement") or {}
        agreement = f"{safety['mean']:.2f} ({safety['tools']})" if safety.get("tools") else "–"
        rows.append([m.get("family", name), m.get("strategy", ""), str(m.get("device", "")), _cell(m.get("steps"), 0),
                     _cell(m.get("train_seconds"), 0), _cell(m.get("final_loss"), 2), _cell(v.get("images"), 0),
                     _cell(v.get("json_valid"), 2), _cell(v.get("name_f1"), 2), _cell(v.get("f1"), 2),
                     _cell(v.get("mean_iou"), 2), agreement])
    intro = _para("From `metrics/detail/finetune/<family>-<strategy>.json`: LoRA steps and their wall-clock seconds on "
                  "the device named, then the answers on valid images (no retrieval, greedy). Safety agreement "
                  "is over the matched tools, counted in brackets.")
    return f"## Finetune matrix (finetune stage)\n\n{intro}\n{_table(head, rows, left=3)}"


def rag_section(rag: dict) -> str:
    """Retrieval quality per rerank mode (`metrics/detail/rag.json`), the configured one marked."""
    head = ["rerank", "recall@1", "recall@3", "recall@5", "hit@1", "MRR"]
    rows = [[f"{mode} (configured)" if mode == rag.get("rerank") else mode,
             *(_cell(scores.get(k), 3) for k in ("recall@1", "recall@3", "recall@5", "hit@1", "mrr"))]
            for mode, scores in (rag.get("by_rerank") or {}).items()]
    intro = _para(f"From `metrics/detail/rag.json`: {rag.get('queries')} labelled queries over {rag.get('chunks')} chunks "
                  f"of {rag.get('passages')} passages, vector store `{rag.get('vector_store')}`.")
    return f"## Retrieval (rag-index stage)\n\n{intro}\n{_table(head, rows)}"


def results_doc(metrics_dir: str | Path = "metrics") -> str:
    metrics_dir = Path(metrics_dir) / "detail"  # the stages' full documents (the headlines are beside them)
    runs = {p.stem: _read(p) for p in sorted((metrics_dir / "finetune").glob("*.json"))}
    evaluation = _read(metrics_dir / "eval.json")
    compared_path = metrics_dir / "eval_comparisons.json"
    compared = _read(compared_path) if compared_path.exists() else None
    sections = [HEADER, targets_section(evaluation, compared), eval_section(evaluation, compared),
                finetune_section(runs, list(evaluation)), rag_section(_read(metrics_dir / "rag.json"))]
    return "\n".join(sections)


def write_results_doc(metrics_dir: str | Path = "metrics", path: str | Path = DOC_PATH) -> Path:
    return _write_text(Path(path), results_doc(metrics_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", default="metrics", help="the metrics directory")
    parser.add_argument("--out", default=str(DOC_PATH))
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs from what the metrics give")
    args = parser.parse_args(argv)
    if args.check:
        out = Path(args.out)
        if not out.exists() or out.read_text(encoding="utf-8") != results_doc(args.metrics):
            print(f"{out} differs from what {args.metrics}/ gives: run python -m safetyvlm.eval.docs", file=sys.stderr)
            return 1
        return 0
    print(write_results_doc(args.metrics, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
