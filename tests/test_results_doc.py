"""docs/results.md is generated from the metrics files; a committed table that differs from them fails here."""

import json
import re
import shutil
from pathlib import Path

import yaml

from safetyvlm.eval.docs import main, results_doc

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"


def numbers(text: str) -> list[list[str]]:
    """The figures of each markdown table row of `text`, in order ("0.29 (5)" counts as one)."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row if re.fullmatch(r"-?\d+(\.\d+)?( \(\d+\))?", c.strip())] for row in rows]


def test_the_committed_doc_is_what_the_committed_metrics_give():
    assert DOC.read_text(encoding="utf-8") == results_doc(ROOT / "metrics"), (
        "docs/results.md differs from metrics/: run `python -m safetyvlm.eval.docs` (or dvc repro results-doc)")


def test_the_readme_copies_no_measured_table_by_hand():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    generated = [row for row in numbers(DOC.read_text(encoding="utf-8")) if len(row) >= 4]
    assert len(generated) >= 12 + 6 + 4  # the eval, finetune and retrieval rows
    for row in numbers(readme):
        # four figures in a row, as in a generated row, are a copy (whatever the columns around them)
        for k in range(len(row) - 3):
            run = row[k:k + 4]
            assert not any(run == g[i:i + 4] for g in generated for i in range(len(g) - 3)), (
                f"README copies measured figures by hand: {run}")
    assert "docs/results.md" in readme


def test_check_fails_when_a_figure_changes_and_the_stage_regenerates_the_doc(tmp_path):
    metrics = tmp_path / "metrics"
    shutil.copytree(ROOT / "metrics", metrics)
    out = tmp_path / "results.md"
    assert main(["--metrics", str(metrics), "--out", str(out)]) == 0
    assert main(["--check", "--metrics", str(metrics), "--out", str(out)]) == 0
    doc = json.loads((metrics / "detail/eval.json").read_text())
    doc["qwen2_5_vl"]["zero-shot"]["latency_p50"] = 12.345
    (metrics / "detail/eval.json").write_text(json.dumps(doc))
    assert main(["--check", "--metrics", str(metrics), "--out", str(out)]) == 1  # a stale table is caught
    assert "| 12.35 |" in results_doc(metrics)
    run = json.loads((metrics / "detail/finetune/mllama-vision.json").read_text())
    run["train_seconds"] = 9999.0
    (metrics / "detail/finetune/mllama-vision.json").write_text(json.dumps(run))
    assert "| 9999 |" in results_doc(metrics)


def test_dvc_regenerates_the_doc_after_the_stages_it_reads():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["results-doc"]
    assert {"metrics/detail/eval.json", "metrics/detail/finetune", "metrics/detail/rag.json",
            "src/safetyvlm/eval"} <= set(
        stage["deps"])
    assert stage["outs"] == [{"docs/results.md": {"cache": False}}]


def test_targets_name_the_best_finetuned_row_and_say_by_how_much_each_is_missed():
    from safetyvlm.eval.docs import targets_section

    def row(**kw):
        base = {"json_valid": 0.95, "name_f1": 0.85, "f1": 0.75, "mean_iou": 0.8, "safety_agreement": 0.92,
                "claim_hallucination": 0.05, "ci": {"f1": [0.7, 0.8]}}
        return {**base, **kw}

    doc = {"qwen2_5_vl": {"zero-shot": row(f1=0.65), "ft vision": row(f1=0.5),
                          "ft vision+language": row(f1=0.82, json_valid=0.99, name_f1=0.91),
                          "ft vision+language grounded": {**row(f1=0.99), "grounded": True},
                          "ft vision+language · shifted": row(f1=0.69, claim_hallucination=0.3)}}
    lines = targets_section(doc).splitlines()
    split = ([c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines if ln.startswith("| qwen"))
    cells = {(c[1], c[2]): c[5] for c in split}
    assert cells[("zero-shot", "det F1 @0.5")] == "missed by 0.050"
    assert cells[("zero-shot", "JSON valid")] == "met"
    # the grounded row (not the model's own answers) is never the best finetuned row
    assert cells[("best finetuned: ft vision+language", "det F1 @0.5")] == "met"
    assert cells[("ft vision+language · shifted", "det F1 @0.5")] == "missed by 0.010"
    assert cells[("ft vision+language · shifted", "claim hallucination")] == "missed by 0.100"
    assert "0.820 [0.70, 0.80]" in targets_section(doc)


def test_a_missed_finetune_target_names_its_paired_change_against_the_bases():
    from safetyvlm.eval.docs import targets_section

    row = {"json_valid": 0.99, "name_f1": 0.85, "f1": 0.85, "mean_iou": 0.8, "safety_agreement": 0.95,
           "claim_hallucination": 0.05}
    doc = {"mllama": {"zero-shot": {**row, "name_f1": 0.88}, "ft language": row,
                      "ft language · shifted": {**row, "name_f1": 0.75}, "zero-shot · shifted": row}}
    compared = [{"family": "mllama", "a": "ft language", "b": "zero-shot", "metric": "name_f1", "paired": True,
                 "difference": -0.03, "ci": [-0.05, -0.01], "significant": True},
                {"family": "mllama", "a": "ft language · shifted", "b": "zero-shot · shifted", "metric": "name_f1",
                 "paired": True, "difference": -0.1, "ci": [-0.15, -0.05], "significant": True}]
    text = targets_section(doc, compared)
    assert "- mllama, ft language, name F1: missed by 0.050; ft language - zero-shot on the same images: " \
           "-0.030 [-0.050, -0.010]" in text
    assert "- mllama, ft language · shifted, name F1: missed by 0.050; ft language · shifted - zero-shot · shifted" \
           " on the same images: -0.100 [-0.150, -0.050]" in text
    # the zero-shot row's own misses are the bases', not a finetune's: no line for them
    assert "- mllama, zero-shot" not in text and "finetune-recipe.md" in text
    # nothing missed, no section
    assert "Where the finetuned rows miss" not in targets_section({"mllama": {"zero-shot": row}}, compared)
