"""COCO mAP and the confusion matrix, pinned on hand-made cases with known answers."""

import pytest

from safetyvlm.eval.detection import (
    BACKGROUND,
    UNKNOWN,
    DetectionScores,
    coco_map,
    confusion_matrix,
    confusion_pairs,
    confusion_rows,
)
from safetyvlm.schema import CATEGORIES

H = {"name": "Hammer", "bbox_2d": [0, 0, 10, 10]}
D = {"name": "Drill", "bbox_2d": [20, 20, 40, 40]}
W = {"name": "Wrench", "bbox_2d": [50, 50, 70, 60]}


def test_map_of_a_perfect_answer_is_one():
    m = coco_map([[H, D], [W]], [[H, D], [W]], [(100, 100), (100, 100)])
    assert m["map"] == pytest.approx(1.0) and m["map_50"] == pytest.approx(1.0)
    assert m["per_class_ap"] == pytest.approx({"Hammer": 1.0, "Drill": 1.0, "Wrench": 1.0})


def test_map_of_no_answers_is_zero_and_of_no_truth_is_undefined():
    assert coco_map([[], []], [[H], [D]])["map"] == 0.0
    assert coco_map([[H]], [[]]) == {"map": None, "map_50": None, "map_75": None, "per_class_ap": {}}


def test_map_averages_over_iou_thresholds():
    # IoU 9/11 = 0.818 passes the thresholds 0.50, 0.55, ..., 0.80: 7 of 10
    shifted = {"name": "Hammer", "bbox_2d": [1, 0, 11, 10]}
    m = coco_map([[shifted]], [[H]])
    assert m["map_50"] == pytest.approx(1.0)
    assert m["map"] == pytest.approx(0.7)


def test_map_is_per_class_mean_and_wrong_class_scores_nothing():
    m = coco_map([[H], []], [[H], [D]])  # Hammer found, Drill missed
    assert m["map"] == pytest.approx(0.5)
    assert coco_map([[{**H, "name": "Drill"}]], [[H]])["map"] == 0.0


def test_map_with_equal_scores_ignores_a_trailing_duplicate_unlike_f1():
    # Every generated box scores 1.0; COCO's precision envelope forgives a false positive ranked
    # after the hit, so the duplicate costs precision/F1 but not AP. Pinned so nobody is surprised.
    assert coco_map([[H, H]], [[H]])["map"] == pytest.approx(1.0)
    s = DetectionScores()
    s.add([H, H], [H])
    assert s.summary()["precision"] == 0.5


def test_confusion_cells_of_a_hand_made_image():
    preds = [
        H,  # right class on the Hammer
        {"name": "Wrench", "bbox_2d": [21, 20, 41, 40]},  # wrong class on the Drill
        {"name": "Pliers", "bbox_2d": [80, 80, 90, 90]},  # nothing there
    ]
    pairs = confusion_pairs(preds, [H, D, W])
    assert sorted(pairs) == sorted([
        ("Hammer", "Hammer"), ("Drill", "Wrench"), (BACKGROUND, "Pliers"), ("Wrench", BACKGROUND)])
    labels, counts = confusion_matrix(confusion_rows([preds], [[H, D, W]]))
    assert labels == [*CATEGORIES, UNKNOWN, BACKGROUND]
    ix = labels.index
    assert counts[ix("Hammer")][ix("Hammer")] == 1
    assert counts[ix("Drill")][ix("Wrench")] == 1
    assert counts[ix(BACKGROUND)][ix("Pliers")] == 1
    assert counts[ix("Wrench")][ix(BACKGROUND)] == 1
    assert sum(map(sum, counts)) == 4


def test_confusion_missing_answer_and_duplicates():
    rows = confusion_rows([[], [H, H]], [[D], [H]])
    assert rows == [{"actual": "Drill", "predicted": BACKGROUND},
                    {"actual": "Hammer", "predicted": "Hammer"},
                    {"actual": BACKGROUND, "predicted": "Hammer"}]


def test_confusion_prefers_the_best_overlap_then_the_same_class():
    t1 = {"name": "Hammer", "bbox_2d": [0, 0, 10, 10]}
    t2 = {"name": "Drill", "bbox_2d": [0, 0, 10, 10]}  # same box, other class
    assert sorted(confusion_pairs([{"name": "Drill", "bbox_2d": [0, 0, 10, 10]}], [t1, t2])) == [
        ("Drill", "Drill"), ("Hammer", BACKGROUND)]
    low = {"name": "Hammer", "bbox_2d": [6, 0, 16, 10]}  # IoU 0.25 < 0.5: no pairing
    assert sorted(confusion_pairs([low], [t1])) == sorted([(BACKGROUND, "Hammer"), ("Hammer", BACKGROUND)])
