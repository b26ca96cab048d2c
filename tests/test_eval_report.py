"""Report outputs: eval.json shape, the markdown table, PNG plots, confusion rows, latency."""

import json

import pytest

from safetyvlm.eval.evaluate import evaluate_answers
from safetyvlm.eval.report import (
    SCORED_NOTE,
    TABLE_COLUMNS,
    latency_summary,
    metrics_document,
    results_table,
    write_report,
)
from safetyvlm.kb import load_kb

KB = load_kb()
TRUTHS = [[{"name": "Hammer", "bbox_2d": [10, 10, 60, 60]}],
          [{"name": "Drill", "bbox_2d": [0, 0, 100, 50]}]]
SIZES = [(200, 200), (200, 200)]


def perfect(name, box):
    return json.dumps({"tools": [{"name": name, "bbox_2d": box, **KB.safety_fields(name)}]})


@pytest.fixture(scope="module")
def results():
    good = [perfect("Hammer", [10, 10, 60, 60]), perfect("Drill", [0, 0, 100, 50])]
    half = [good[0], None]
    ev = lambda texts, lat: evaluate_answers(texts, TRUTHS, SIZES, claims=False, latencies=lat)  # noqa: E731
    return {"qwen2_5_vl": {"base": ev(half, [1.0, 2.0]), "finetuned": ev(good, [0.4, 0.6])},
            "mllama": {"base": ev([None, None], None)}}


def test_latency_summary():
    s = latency_summary([float(i) for i in range(1, 101)])
    assert (s["p50"], s["p95"], s["n"]) == (50.5, pytest.approx(95.05), 100)
    assert latency_summary([]) == {"p50": None, "p95": None, "mean": None, "max": None, "n": 0}


def test_write_report_outputs(results, tmp_path):
    paths = write_report(results, tmp_path / "metrics/eval.json", tmp_path / "metrics/results.md",
                         tmp_path / "plots")
    doc = json.loads(paths["metrics"].read_text())
    assert set(doc) == {"qwen2_5_vl", "mllama"} and set(doc["qwen2_5_vl"]) == {"base", "finetuned"}
    fin = doc["qwen2_5_vl"]["finetuned"]
    assert fin["f1"] == 1 and fin["overall"] == 10 and fin["judge"]["judged"] == 2
    assert "confusion" not in fin and "answers" not in fin and "per_answer" not in fin["judge"]
    assert doc["qwen2_5_vl"]["base"]["recall"] == 0.5 and doc["mllama"]["base"]["map"] == 0
    assert doc == metrics_document(results)

    text = paths["table"].read_text()
    assert text.startswith("## Headline columns (95% bootstrap intervals over images)")
    table, note = text.split("## All columns\n\n")[1].split("\n\n")
    assert note == SCORED_NOTE  # what the safety columns score, next to the table
    lines = table.strip().splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:8] == ["Model family", "Condition", "Precision", "Recall", "F1", "IoU",
                        "Instruction Accuracy", "Overall"]
    assert len(head) == 2 + len(TABLE_COLUMNS) + 1 and head[-1] == "Safety text" and len(lines) == 2 + 3
    row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row[:8] == ["qwen2_5_vl", "finetuned", "1.000", "1.000", "1.000", "1.000", "1.000",
                       "10.00"]
    assert row[head.index("Latency p50 (s)")] == "0.50"
    empty = [c.strip() for c in lines[4].strip("|").split("|")]  # mllama/base answered nothing
    assert empty[head.index("Latency p50 (s)")] == "–"
    assert (empty[head.index("Precision")], empty[head.index("IoU")]) == ("–", "–")
    assert (empty[head.index("Recall")], empty[head.index("F1")]) == ("0.000", "0.000")
    assert doc["mllama"]["base"]["precision"] is None and doc["mllama"]["base"]["mean_iou"] is None

    for key in ("radar", "heatmap", "per_class"):
        data = paths[key].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, key
    assert sorted(p.name for p in paths["confusion"]) == [
        "mllama-base.json", "qwen2_5_vl-base.json", "qwen2_5_vl-finetuned.json"]
    rows = json.loads((tmp_path / "plots/confusion/qwen2_5_vl-base.json").read_text())
    assert rows == [{"actual": "Hammer", "predicted": "Hammer"},
                    {"actual": "Drill", "predicted": "background"}]
    assert not list(tmp_path.rglob("*.tmp*")) and not list(tmp_path.rglob(".*tmp*"))


def test_table_marks_missing_values_and_nan_never_reaches_json():
    table = results_table({"f": {"c": {"precision": float("nan"), "overall": None}}})
    assert table.splitlines()[2].startswith("| f | c | – |")
    doc = metrics_document({"f": {"c": {"x": float("inf"), "confusion": [1], "judge": {"per_answer": []}}}})
    assert doc == {"f": {"c": {"x": None, "judge": {}}}}
