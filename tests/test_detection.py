"""Detection metrics pinned on hand-made cases with known answers."""

import pytest

from safetyvlm.eval.detection import DetectionScores, iou, match_image

H = {"name": "Hammer", "bbox_2d": [0, 0, 10, 10]}
D = {"name": "Drill", "bbox_2d": [20, 20, 40, 40]}


def score(pairs):
    s = DetectionScores()
    for preds, truths in pairs:
        s.add(preds, truths)
    return s.summary()


def test_iou_of_known_boxes():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0


def test_perfect_prediction():
    s = score([([H, D], [H, D])])
    assert (s["precision"], s["recall"], s["f1"], s["mean_iou"], s["name_f1"]) == (1, 1, 1, 1, 1)


def test_empty_answer_counts_every_truth_as_missed():
    s = score([([], [H, D])])
    assert (s["tp"], s["fp"], s["fn"], s["f1"]) == (0, 0, 2, 0)


def test_no_prediction_has_no_precision_and_no_mean_iou():
    # "-" in the table, null in JSON: 0.000 would read as a measured rate
    s = score([([], [H, D])])
    assert s["precision"] is None and s["mean_iou"] is None
    assert (s["recall"], s["f1"]) == (0, 0)
    assert s["per_class"]["Hammer"]["precision"] is None
    # predictions that all miss: precision 0 is a real rate, but there is still no matched IoU
    s = score([([{**H, "name": "Wrench"}], [H])])
    assert s["precision"] == 0 and s["mean_iou"] is None


def test_duplicate_prediction_is_a_false_positive_not_a_second_hit():
    s = score([([H, H], [H])])
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 0)
    assert s["precision"] == 0.5 and s["recall"] == 1


def test_wrong_class_with_perfect_box_is_a_miss_and_a_false_positive():
    s = score([([{**H, "name": "Wrench"}], [H])])
    assert (s["tp"], s["fp"], s["fn"], s["name_f1"]) == (0, 1, 1, 0)


def test_shifted_box_below_threshold_is_not_a_hit_but_the_name_is():
    shifted = {"name": "Hammer", "bbox_2d": [6, 0, 16, 10]}  # IoU 4/16 = 0.25
    s = score([([shifted], [H])])
    assert s["tp"] == 0 and s["name_f1"] == 1
    slightly = {"name": "Hammer", "bbox_2d": [1, 0, 11, 10]}  # IoU 9/11
    s = score([([slightly], [H])])
    assert s["tp"] == 1 and s["mean_iou"] == pytest.approx(9 / 11)


def test_matching_is_one_to_one_by_best_iou():
    t1 = {"name": "Hammer", "bbox_2d": [0, 0, 10, 10]}
    t2 = {"name": "Hammer", "bbox_2d": [2, 0, 12, 10]}
    p = {"name": "Hammer", "bbox_2d": [2, 0, 12, 10]}
    assert match_image([p], [t1, t2]) == [(0, 1, 1.0)]


def test_per_class_and_macro():
    s = score([([H], [H, D])])
    assert s["per_class"]["Hammer"]["f1"] == 1 and s["per_class"]["Drill"]["f1"] == 0
    assert s["macro_f1"] == 0.5
