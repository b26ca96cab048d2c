"""Results across conditions: `metrics/eval.json`, the `results.md` table, plots, confusion rows.

`results` is always `{family: {condition: metrics}}`, `metrics` being what
`safetyvlm.eval.evaluate.evaluate_answers` returns for that condition. Plots use matplotlib's Agg
backend (no display). Every file is written to a temporary name and renamed, so a crashed run never
leaves half a file behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from safetyvlm.eval.bootstrap import paired_difference
from safetyvlm.eval.judge import DIMENSION_LABELS, DIMENSIONS
from safetyvlm.schema import CATEGORIES

# (key in the condition's metrics, column header, digits)
TABLE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("precision", "Precision", 3),
    ("recall", "Recall", 3),
    ("f1", "F1", 3),
    ("mean_iou", "IoU", 3),
    ("instruction_accuracy", "Instruction Accuracy", 3),
    ("overall", "Overall", 2),
    ("map", "mAP@[.5:.95]", 3),
    ("map_50", "mAP@.5", 3),
    ("name_f1", "Name F1", 3),
    ("json_valid", "JSON valid", 3),
    ("schema_complete", "Complete", 3),
    ("safety_agreement", "Safety agreement", 3),
    ("object_hallucination", "Object halluc.", 3),
    ("claim_hallucination", "Claim halluc.", 3),
    ("latency_p50", "Latency p50 (s)", 2),
    ("latency_p95", "Latency p95 (s)", 2),
)
# Rows of the heatmap; all in 0..1 (Overall is shown /10). Hallucinations: lower is better.
HEATMAP_METRICS: tuple[tuple[str, str], ...] = (
    ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"), ("mean_iou", "IoU"),
    ("map", "mAP"), ("map_50", "mAP@.5"), ("name_f1", "Name F1"), ("json_valid", "JSON valid"),
    ("schema_complete", "Complete"), ("safety_agreement", "Safety agreement"),
    ("instruction_accuracy", "Instruction acc."), ("overall", "Overall / 10"),
    ("object_hallucination", "Object halluc. (lower better)"),
    ("claim_hallucination", "Claim halluc. (lower better)"),
)
_NOT_METRICS = ("confusion", "answers", "per_image")  # per-instance data: plots, intervals, debugging

# The main columns, each with its 95% bootstrap interval over images (`eval.bootstrap`).
MAIN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("json_valid", "JSON valid"), ("name_f1", "Name F1"), ("f1", "Det F1 @.5"), ("mean_iou", "IoU"),
    ("safety_agreement", "Safety agreement"),
)
SHIFTED_SUFFIX = " · shifted"  # a condition's row on the shifted test set (eval.shifted)
# The comparisons the results make: (condition A, condition B) - A's metric minus B's, on the same images.
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("ft vision", "zero-shot"), ("ft language", "zero-shot"), ("ft vision+language", "zero-shot"),
    ("ft vision+language", "ft vision"), ("ft vision+language", "ft language"),
    ("ft vision+language + RAG", "ft vision+language"), ("preference-trained", "ft vision+language"),
)
COMPARED_METRICS = ("json_valid", "name_f1", "f1", "safety_agreement")

# Said next to every results table: what the safety columns score, and how it differs from the service.
SCORED_NOTE = textwrap.fill(
    "What is scored: in rows whose *Safety text* is `model`, the safety columns (Safety agreement, "
    "Complete, Claim halluc. and the judge's content scores) score the safety text the model wrote. "
    "The service does not return that text by default: with `serve.ground: true` each tool's primary "
    "function, PPE, hazards and misuses are the knowledge base's entry for the tool's name. Rows whose "
    "*Safety text* is `KB` score exactly that: the same answers as the model's own row (same detection, "
    "JSON validity and latency), safety fields from the knowledge base by name.", 100) + "\n"


def latency_summary(seconds: Sequence[float] | None) -> dict:
    """p50 / p95 (linear interpolation, numpy's default), mean and max of per-answer seconds."""
    s = np.asarray([float(x) for x in (seconds or [])], dtype=float)
    if s.size == 0:
        return {"p50": None, "p95": None, "mean": None, "max": None, "n": 0}
    return {"p50": float(np.percentile(s, 50)), "p95": float(np.percentile(s, 95)),
            "mean": float(s.mean()), "max": float(s.max()), "n": int(s.size)}


def _clean(value):
    """JSON-safe copy: no NaN/inf (-> None), examples and per-answer data dropped."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if k not in ("examples", "per_answer")}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def metrics_document(results: dict) -> dict:
    """The `metrics/eval.json` document: `{family: {condition: metrics}}` without per-instance data."""
    return {fam: {cond: _clean({k: v for k, v in m.items() if k not in _NOT_METRICS})
                  for cond, m in conds.items()}
            for fam, conds in results.items()}


def _cell(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, float, np.floating)):
        return f"{float(value):.{digits}f}"
    return str(value)


def results_table(results: dict) -> str:
    """Markdown table, one row per (family, condition). Overall is on the judges' 0-10 scale. The last
    column says whose safety text the row scores: the model's, or the knowledge base's (grounded)."""
    head = ["Model family", "Condition", *(h for _, h, _ in TABLE_COLUMNS), "Safety text"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * len(TABLE_COLUMNS) + ["---"]) + "|"]
    for fam, conds in results.items():
        for cond, m in conds.items():
            cells = [fam, cond, *(_cell(m.get(k), d) for k, _, d in TABLE_COLUMNS),
                     "KB" if m.get("grounded") else "model"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _with_ci(m: dict, key: str) -> str:
    value = _cell(m.get(key), 3)
    ci = (m.get("ci") or {}).get(key)
    return f"{value} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and value != "–" else value


def main_table(results: dict) -> str:
    """The headline columns with their 95% bootstrap intervals over images, one row per condition."""
    head = ["Model family", "Condition", "Images", *(h for _, h in MAIN_COLUMNS), "Safety text"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(MAIN_COLUMNS) + 1) + ["---"]) + "|"]
    for fam, conds in results.items():
        for cond, m in conds.items():
            cells = [fam, cond, str(m.get("n_images", "–")), *(_with_ci(m, k) for k, _ in MAIN_COLUMNS),
                     "KB" if m.get("grounded") else "model"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparisons(results: dict) -> list[dict]:
    """Paired differences (A - B on the same images, 95% paired bootstrap interval) for COMPARISONS on the
    test set and on the shifted set, and each condition on the shifted set against itself on the test set
    (other images: the difference only), per family and COMPARED_METRICS."""
    out = []
    for fam, conds in results.items():
        pairs = [(a, b) for a, b in COMPARISONS if a in conds and b in conds]
        pairs += [(c, c[: -len(SHIFTED_SUFFIX)]) for c in conds
                  if c.endswith(SHIFTED_SUFFIX) and c[: -len(SHIFTED_SUFFIX)] in conds]
        pairs += [(a + SHIFTED_SUFFIX, b + SHIFTED_SUFFIX) for a, b in COMPARISONS
                  if a + SHIFTED_SUFFIX in conds and b + SHIFTED_SUFFIX in conds]
        for a, b in pairs:
            pa, pb = conds[a].get("per_image"), conds[b].get("per_image")
            if not pa or not pb:
                continue
            paired = len(pa) == len(pb) and a.endswith(SHIFTED_SUFFIX) == b.endswith(SHIFTED_SUFFIX)
            for metric in COMPARED_METRICS:
                if paired:
                    d = paired_difference(pa, pb, metric)
                else:  # other images (the shifted set): the two rows' own intervals, not a paired one
                    va, vb = conds[a].get(metric), conds[b].get(metric)
                    d = {"metric": metric, "difference": None if va is None or vb is None else round(va - vb, 4),
                         "ci": None, "significant": None}
                out.append({"family": fam, "a": a, "b": b, "paired": paired, **d})
    return out


def comparisons_table(rows: list[dict]) -> str:
    head = ["Model family", "A", "B", *(h for k, h in MAIN_COLUMNS if k in COMPARED_METRICS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * len(COMPARED_METRICS)) + "|"]
    grouped: dict[tuple, dict] = {}
    for r in rows:
        grouped.setdefault((r["family"], r["a"], r["b"]), {})[r["metric"]] = r
    for (fam, a, b), by_metric in grouped.items():
        cells = []
        for k, _ in MAIN_COLUMNS:
            if k not in COMPARED_METRICS:
                continue
            r = by_metric.get(k)
            if not r or r["difference"] is None:
                cells.append("–")
            elif r["ci"]:
                mark = " *" if r["significant"] else ""
                cells.append(f"{r['difference']:+.3f} [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]{mark}")
            else:
                cells.append(f"{r['difference']:+.3f}")
        lines.append("| " + " | ".join([fam, a, b, *cells]) + " |")
    return "\n".join(lines) + "\n"


COMPARISON_NOTE = textwrap.fill(
    "A - B on the same test images, with the 95% paired bootstrap interval over images (2,000 resamples); "
    "* marks an interval that excludes 0, i.e. a difference these images support. Rows comparing a "
    "shifted-set row with a test-set row compare different images: the difference only, see each row's own "
    "interval.", 100) + "\n"


def results_markdown(results: dict) -> str:
    """`metrics/results.md`: the headline columns with intervals, the paired comparisons, the full table,
    and the note on what the safety columns score."""
    return ("## Headline columns (95% bootstrap intervals over images)\n\n" + main_table(results) + "\n"
            + "## Which differences are real\n\n" + comparisons_table(comparisons(results)) + "\n"
            + COMPARISON_NOTE + "\n## All columns\n\n" + results_table(results) + "\n" + SCORED_NOTE)


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _labels(results: dict) -> list[tuple[str, str, dict]]:
    return [(fam, cond, m) for fam, conds in results.items() for cond, m in conds.items()]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_judge_radar(results: dict, path: str | Path) -> Path:
    """One radar chart per condition over the five judge dimensions (0-10), side by side."""
    plt = _pyplot()
    items = _labels(results)
    n = max(1, len(items))
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(3.6 * cols, 3.6 * rows))
    angles = np.linspace(0, 2 * np.pi, len(DIMENSIONS), endpoint=False).tolist()
    for k, (fam, cond, m) in enumerate(items):
        ax = fig.add_subplot(rows, cols, k + 1, projection="polar")
        judge = m.get("judge") or {}
        values = [judge.get(d) for d in DIMENSIONS]
        ax.set_xticks(angles)
        ax.set_xticklabels([DIMENSION_LABELS[d].replace(" ", "\n", 1) for d in DIMENSIONS], fontsize=7)
        ax.set_ylim(0, 10)
        ax.set_yticks([2, 4, 6, 8, 10])
        ax.tick_params(axis="y", labelsize=6)
        overall = judge.get("overall")
        title = f"{fam} / {cond}" + (f"\noverall {overall:.2f}" if overall is not None else "")
        ax.set_title(title, fontsize=9, pad=14)
        if any(v is None for v in values):
            ax.text(0, 0, "no judgments", ha="center", va="center", fontsize=8)
            continue
        ax.plot(angles + angles[:1], values + values[:1], linewidth=1.5)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.25)
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def plot_metric_heatmap(results: dict, path: str | Path) -> Path:
    """Metrics (rows) x conditions (columns), colour 0..1, the value written in each cell."""
    plt = _pyplot()
    items = _labels(results)
    grid = np.full((len(HEATMAP_METRICS), max(1, len(items))), np.nan)
    for c, (_, _, m) in enumerate(items):
        for r, (key, _) in enumerate(HEATMAP_METRICS):
            v = m.get(key)
            if v is not None:
                grid[r, c] = float(v) / 10 if key == "overall" else float(v)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * max(1, len(items)), 0.42 * len(HEATMAP_METRICS) + 1.2))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(len(HEATMAP_METRICS)), [label for _, label in HEATMAP_METRICS], fontsize=8)
    ax.set_xticks(range(len(items)), [f"{f}\n{c}" for f, c, _ in items], fontsize=8, rotation=30,
                  ha="right")
    for r in range(grid.shape[0]):
        for c in range(len(items)):
            v = grid[r, c]
            ax.text(c, r, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if not np.isnan(v) and v < 0.55 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title("Metrics by condition")
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def plot_per_class(results: dict, path: str | Path, metric: str = "f1") -> Path:
    """Grouped bars: per-class `metric` (f1, precision, recall or ap), one bar per condition."""
    plt = _pyplot()
    items = _labels(results)
    seen = {c for _, _, m in items for c in (m.get("per_class") or {})}
    classes = [c for c in CATEGORIES if c in seen] or list(CATEGORIES)
    width = 0.8 / max(1, len(items))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(classes) * max(1, len(items)) ** 0.5 + 2), 4))
    x = np.arange(len(classes))
    for k, (fam, cond, m) in enumerate(items):
        pc = m.get("per_class") or {}
        vals = [float((pc.get(c) or {}).get(metric) or 0.0) for c in classes]
        ax.bar(x - 0.4 + width * (k + 0.5), vals, width, label=f"{fam} / {cond}")
    ax.set_xticks(x, classes, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(metric)
    ax.set_title(f"Per-class {metric}")
    if items:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def write_confusion(results: dict, directory: str | Path) -> list[Path]:
    """`<directory>/<family>-<condition>.json`: a DVC `confusion` plot's rows (actual, predicted)."""
    paths = []
    for fam, cond, m in _labels(results):
        rows = m.get("confusion") or []
        paths.append(_write_text(Path(directory) / f"{_slug(fam)}-{_slug(cond)}.json",
                                 json.dumps(rows, indent=1) + "\n"))
    return paths


def write_report(results: dict, metrics_path: str | Path = "metrics/eval.json",
                 table_path: str | Path = "metrics/results.md",
                 plots_dir: str | Path = "plots/eval") -> dict[str, Path | list[Path]]:
    """Write eval.json, results.md, the three PNG plots and the confusion rows; returns the paths."""
    plots_dir = Path(plots_dir)
    compared = _clean(comparisons(results))
    return {
        "metrics": _write_text(Path(metrics_path),
                               json.dumps(metrics_document(results), indent=2, allow_nan=False) + "\n"),
        "comparisons": _write_text(Path(metrics_path).with_name("eval_comparisons.json"),
                                   json.dumps(compared, indent=1, allow_nan=False) + "\n"),
        "table": _write_text(Path(table_path), results_markdown(results)),
        "radar": plot_judge_radar(results, plots_dir / "judge_radar.png"),
        "heatmap": plot_metric_heatmap(results, plots_dir / "metrics_heatmap.png"),
        "per_class": plot_per_class(results, plots_dir / "per_class_f1.png"),
        "confusion": write_confusion(results, plots_dir / "confusion"),
    }
