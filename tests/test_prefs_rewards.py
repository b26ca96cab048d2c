"""The verifiable rewards on hand-made answers with known scores."""

import json

import pytest

from safetyvlm.kb import load_kb
from safetyvlm.model.boxes import model_frame
from safetyvlm.parse import parse_report
from safetyvlm.prefs.rewards import (AnswerScorer, detection_quality, format_length, json_validity,
                                     safety_grounding)
from safetyvlm.train.preferences import PrefsConfig

KB = load_kb()
HAMMER = KB.safety_fields("Hammer")
TRUTH = [{"name": "Hammer", "bbox_2d": [10, 10, 50, 30]}, {"name": "Drill", "bbox_2d": [60, 60, 100, 100]}]


def tool(name, box, **fields):
    return {"name": name, "bbox_2d": box, **fields}


def test_json_validity_strict_repaired_and_none():
    good = json.dumps({"tools": [{"name": "Hammer", "bbox_2d": [1, 2, 3, 4], **HAMMER}]})
    assert json_validity(parse_report(good)) == 1.0
    assert json_validity(parse_report(good[:-3])) == 0.5      # truncated, readable after repair
    assert json_validity(parse_report("I see a hammer.")) == 0.0
    assert json_validity(parse_report('{"tools": []}')) == 1.0


def test_detection_quality_perfect_empty_shifted_and_wrong_class():
    assert detection_quality(TRUTH, TRUTH) == pytest.approx(1.0)
    assert detection_quality([], TRUTH) == 0.0
    assert detection_quality([], []) == 1.0
    assert detection_quality([tool("Hammer", [0, 0, 5, 5])], []) == 0.0
    # shifted by half its width: IoU 1/3 -> no match at 0.5, but the soft term still pays
    shifted = [tool("Hammer", [30, 10, 70, 30]), TRUTH[1]]
    q = detection_quality(shifted, TRUTH)
    assert q == pytest.approx(0.5 * (2 * 1 / 4) + 0.5 * (1 / 3 + 1) / 2)
    assert 0 < q < 1
    wrong = [tool("Drill", TRUTH[0]["bbox_2d"]), tool("Hammer", TRUTH[1]["bbox_2d"])]
    assert detection_quality(wrong, TRUTH) == 0.0
    # a duplicate of a correct box is a false positive
    assert detection_quality([*TRUTH, TRUTH[0]], TRUTH) < 1.0


def test_safety_grounding_counts_claims_found_in_the_tools_entry():
    grounded = tool("Hammer", [0, 0, 1, 1], **HAMMER)
    assert safety_grounding([grounded], KB) == 1.0
    invented = tool("Hammer", [0, 0, 1, 1], primary_function=HAMMER["primary_function"],
                    required_ppe=["a lead apron"], primary_hazards=["radiation burns"], common_misuses=[])
    assert safety_grounding([invented], KB) == pytest.approx(1 / 3)
    # the drill's hazards are true of a drill, not of a hammer
    borrowed = tool("Hammer", [0, 0, 1, 1], primary_hazards=KB.safety_fields("Drill")["primary_hazards"])
    assert safety_grounding([borrowed], KB) == 0.0
    assert safety_grounding([tool("Hammer", [0, 0, 1, 1])], KB) == 0.0       # nothing claimed
    assert safety_grounding([], KB, has_tools=False) == 1.0                  # nothing to claim


def test_format_length():
    assert format_length('{"tools": []}') == 1.0
    assert format_length('Sure! {"tools": []}') == 0.5
    assert format_length('{"tools": [{"name": "Hammer"') == 0.0
    assert format_length("") == 0.0
    assert format_length("{" + "x" * 298 + "}", max_chars=200) == pytest.approx(0.5)
    assert format_length("{" + "x" * 500 + "}", max_chars=200) == 0.0


def test_a_made_up_name_costs_detection_like_a_wrong_one():
    scorer = AnswerScorer(model_frame("mllama"), KB)
    size = (200, 100)
    hammer = {"name": "Hammer", "bbox_2d": [50, 100, 250, 300], **HAMMER}
    alone = scorer.scores(json.dumps({"tools": [hammer]}), TRUTH[:1], size)["detection_quality"]
    extra = {"name": "Whatsit", "bbox_2d": [600, 600, 800, 800]}
    made_up = scorer.scores(json.dumps({"tools": [hammer, extra]}), TRUTH[:1], size)["detection_quality"]
    wrong = scorer.scores(json.dumps({"tools": [hammer, {**extra, "name": "Drill"}]}), TRUTH[:1],
                          size)["detection_quality"]
    assert alone == pytest.approx(1.0) and made_up == pytest.approx(wrong) and made_up < alone


def test_scorer_reads_model_frame_boxes_and_weights_the_total():
    frame = model_frame("mllama")  # boxes on a 0..1000 grid
    scorer = AnswerScorer(frame, KB, {"json_validity": 1, "detection_quality": 1, "safety_grounding": 1,
                                      "format_length": 1})
    size = (200, 100)
    # Hammer truth [10, 10, 50, 30] in 200x100 pixels -> [50, 100, 250, 300] on the 0..1000 grid
    answer = json.dumps({"tools": [{"name": "Hammer", "bbox_2d": [50, 100, 250, 300], **HAMMER}]})
    s = scorer.scores(answer, TRUTH[:1], size)
    assert s["json_validity"] == 1.0 and s["safety_grounding"] == 1.0 and s["format_length"] == 1.0
    assert s["detection_quality"] == pytest.approx(1.0)
    assert s["total"] == pytest.approx(1.0)
    bad = scorer.scores("no idea", TRUTH[:1], size)
    assert bad["total"] == 0.0
    # TRL's reward-function form: conversational completions and dataset columns as kwargs
    fns = scorer.reward_functions()
    assert [f.__name__ for f in fns] == ["json_validity", "detection_quality", "safety_grounding", "format_length"]
    completions = [[{"role": "assistant", "content": answer}], [{"role": "assistant", "content": "no idea"}]]
    det = fns[1](completions, instances=[TRUTH[:1], TRUTH[:1]], image_size=[list(size), list(size)])
    assert det == pytest.approx([1.0, 0.0])
    with pytest.raises(ValueError, match="unknown reward"):
        AnswerScorer(frame, KB, {"fluency": 1.0})


def test_prefs_config_from_params_and_errors():
    import yaml

    cfg = PrefsConfig.from_dict(yaml.safe_load(open("params.yaml"))["grpo"])
    assert cfg.method in ("dpo", "grpo") and cfg.pairs.margin >= 0
    with pytest.raises(ValueError, match="grpo.method"):
        PrefsConfig.from_dict({"method": "ppo"})
    with pytest.raises(ValueError, match="unknown keys"):
        PrefsConfig.from_dict({"dpo": {"betta": 0.1}})
    with pytest.raises(ValueError, match="multiple of"):
        PrefsConfig.from_dict({"grpo": {"batch_size": 6, "num_generations": 4}})
    with pytest.raises(ValueError, match="unknown rewards"):
        PrefsConfig.from_dict({"pairs": {"weights": {"niceness": 1}}})
