"""95% bootstrap intervals over images and paired differences: on hand-made per-image counts."""

import json

import numpy as np
import pytest

from safetyvlm.eval.bootstrap import intervals, metrics_from_sums, paired_difference, _table
from safetyvlm.eval.evaluate import evaluate_answers
from safetyvlm.eval.report import comparisons, main_table, results_markdown


def image(tp=0, fp=0, fn=0, valid=1, agree=0.0, n=0):
    return {"tp": tp, "fp": fp, "fn": fn, "iou_sum": 0.8 * tp, "name_tp": tp, "name_fp": fp, "name_fn": fn,
            "valid": valid, "agree_sum": agree, "agree_n": n}


def test_the_point_estimate_lies_in_its_interval_and_more_images_narrow_it():
    rng = np.random.default_rng(0)
    few = [image(tp=int(h), fn=int(not h), valid=int(h)) for h in rng.random(20) < 0.7]
    many = [image(tp=int(h), fn=int(not h), valid=int(h)) for h in rng.random(400) < 0.7]
    for rows in (few, many):
        point = metrics_from_sums(_table(rows).sum(axis=0))
        ci = intervals(rows)
        for m in ("f1", "json_valid"):
            assert ci[m][0] <= point[m] <= ci[m][1]
    width = lambda rows: intervals(rows)["json_valid"][1] - intervals(rows)["json_valid"][0]  # noqa: E731
    assert width(many) < width(few) / 2
    assert intervals(few) == intervals(few)  # seeded: a rerun gives the same figures
    assert intervals(few)["safety_agreement"] is None  # no matched tool: no agreement, no interval


def test_a_consistent_small_gain_is_significant_paired_but_not_from_two_separate_intervals():
    rng = np.random.default_rng(1)
    hard = rng.random(200) < 0.5  # half the images are hard for both models
    b = [image(tp=int(not h), fn=int(h)) for h in hard]
    flips = set(rng.choice(np.flatnonzero(hard), 12, replace=False).tolist())  # A also gets 12 hard ones
    a = [image(tp=int((not h) or i in flips), fn=int(h and i not in flips)) for i, h in enumerate(hard)]
    d = paired_difference(a, b, "f1")
    assert d["difference"] > 0 and d["significant"] and d["ci"][0] > 0
    ia, ib = intervals(a)["f1"], intervals(b)["f1"]
    assert ia[0] < ib[1]  # the separate intervals overlap: only the paired one can tell
    same = paired_difference(b, b, "f1")
    assert same["difference"] == 0 and not same["significant"]
    with pytest.raises(ValueError, match="same images"):
        paired_difference(a, b[:-1], "f1")


def test_evaluate_answers_carries_per_image_counts_that_give_its_own_figures():
    truths = [[{"name": "Hammer", "bbox_2d": [10, 10, 60, 60]}],
              [{"name": "Drill", "bbox_2d": [0, 0, 50, 50]}, {"name": "Hammer", "bbox_2d": [60, 60, 100, 100]}],
              [{"name": "Wrench", "bbox_2d": [5, 5, 40, 40]}]]
    texts = [json.dumps({"tools": [{"name": "Hammer", "bbox_2d": [10, 10, 60, 60]}]}),
             json.dumps({"tools": [{"name": "Drill", "bbox_2d": [0, 0, 50, 52]}, {"name": "Saw", "bbox_2d": [1, 1, 9, 9]}]}),
             "no json here"]
    m = evaluate_answers(texts, truths, [(128, 128)] * 3, claims=False)
    assert len(m["per_image"]) == 3 and [r["valid"] for r in m["per_image"]] == [0, 0, 0]
    point = metrics_from_sums(_table(m["per_image"]).sum(axis=0))
    assert point["f1"] == pytest.approx(m["f1"]) and point["name_f1"] == pytest.approx(m["name_f1"])
    assert point["mean_iou"] == pytest.approx(m["mean_iou"]) and point["json_valid"] == m["json_valid"]
    assert set(m["ci"]) == {"f1", "name_f1", "json_valid", "mean_iou", "safety_agreement"}


def test_results_carry_intervals_and_the_paired_comparisons_of_the_conditions():
    rng = np.random.default_rng(2)
    hard = rng.random(100) < 0.6
    zero = [image(tp=int(not h), fn=int(h), valid=0) for h in hard]
    tuned = [image(tp=1, fn=0, valid=1, agree=0.9, n=1) for _ in hard]

    def cond(rows, n=100):
        sums = metrics_from_sums(_table(rows).sum(axis=0))
        return {"n_images": n, **{k: float(v) for k, v in sums.items()}, "ci": intervals(rows), "per_image": rows}

    results = {"qwen2_5_vl": {"zero-shot": cond(zero), "ft vision+language": cond(tuned),
                              "ft vision+language · shifted": cond(tuned[:50], 50),
                              "zero-shot · shifted": cond(zero[:50], 50)}}
    rows = comparisons(results)
    gain = next(r for r in rows if r["a"] == "ft vision+language" and r["b"] == "zero-shot" and r["metric"] == "f1")
    assert gain["paired"] and gain["significant"] and gain["ci"][0] > 0.3
    shifted = next(r for r in rows if r["a"] == "ft vision+language · shifted" and r["metric"] == "f1"
                   and r["b"] == "ft vision+language")
    assert not shifted["paired"] and shifted["ci"] is None
    # two rows on the same shifted images are paired like the test set's
    on_shift = next(r for r in rows if r["a"] == "ft vision+language · shifted" and r["b"] == "zero-shot · shifted"
                    and r["metric"] == "f1")
    assert on_shift["paired"] and on_shift["significant"] and on_shift["ci"][0] > 0.2
    table = main_table(results)
    assert "| qwen2_5_vl | zero-shot | 100 |" in table and "[" in table
    md = results_markdown(results)
    assert "Which differences are real" in md and " *" in md
