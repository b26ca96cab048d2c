"""evaluate_answers: parse, convert boxes with the caller's frame function, score everything."""

import json
from functools import partial

import pytest
from test_schema_parse import name_logprobs

from safetyvlm.eval.evaluate import evaluate_answers
from safetyvlm.eval.hallucination import ClaimChecker, load_embedder
from safetyvlm.eval.report import metrics_document
from safetyvlm.kb import load_kb
from safetyvlm.model.boxes import ModelFrame, from_model_frame, to_model_frame

KB = load_kb()
SIZES = [(640, 480), (1000, 300)]
TRUTHS = [
    [{"name": "Hammer", "bbox_2d": [64.0, 48.0, 320.0, 240.0]},
     {"name": "Drill", "bbox_2d": [400.0, 100.0, 600.0, 400.0]}],
    [{"name": "Wrench", "bbox_2d": [100.0, 30.0, 300.0, 150.0]}],
]
NORMALIZED = ModelFrame(kind="normalized", scale=1000)


def answer(tools_with_boxes):
    return json.dumps({"tools": [{"name": n, "bbox_2d": b, **KB.safety_fields(n)}
                                 for n, b in tools_with_boxes]})


def answers_in(frame):
    """Perfect answers written in `frame` (None = original pixels)."""
    out = []
    for truths, size in zip(TRUTHS, SIZES):
        conv = (lambda b: b) if frame is None else (lambda b: to_model_frame(b, size, frame))
        out.append(answer([(t["name"], conv(t["bbox_2d"])) for t in truths]))
    return out


def run(texts, frame_fn=None, **kw):
    return evaluate_answers(texts, TRUTHS, SIZES, frame_fn, claims=kw.pop("claims", False), **kw)


def test_perfect_pixel_answers():
    m = run(answers_in(None), latencies=[0.5, 1.5])
    assert (m["precision"], m["recall"], m["f1"], m["mean_iou"]) == (1, 1, 1, 1)
    assert m["map"] == pytest.approx(1.0) and m["map_50"] == pytest.approx(1.0)
    assert (m["json_valid"], m["schema_complete"], m["safety_agreement"]) == (1, 1, 1)
    assert m["object_hallucination"] == 0 and m["instruction_accuracy"] == 1
    assert m["overall"] == 10.0 and m["judge"]["failed"] == 0
    assert (m["latency_p50"], m["latency_p95"]) == (1.0, pytest.approx(1.45))
    assert all(r["actual"] == r["predicted"] for r in m["confusion"]) and len(m["confusion"]) == 3


def test_normalized_boxes_score_only_through_the_right_frame():
    texts = answers_in(NORMALIZED)  # 0..1000 per axis
    right = run(texts, partial(from_model_frame, frame=NORMALIZED))
    assert right["f1"] == 1.0 and right["mean_iou"] > 0.99
    wrong = run(texts)  # the same numbers read as pixels
    assert (wrong["tp"], wrong["f1"], wrong["mean_iou"]) == (0, 0.0, None)
    assert right["name_f1"] == wrong["name_f1"] == 1.0  # names do not depend on the frame


def test_mixed_frames_each_converted_by_its_own_function():
    qwen = ModelFrame(kind="resized_pixels", factor=28, min_pixels=56 * 56, max_pixels=448 * 448)
    frames = [NORMALIZED, qwen]
    texts = [answer([(t["name"], to_model_frame(t["bbox_2d"], size, f)) for t in truths])
             for truths, size, f in zip(TRUTHS, SIZES, frames)]
    by_image = {s: f for s, f in zip(SIZES, frames)}
    m = run(texts, lambda box, size: from_model_frame(box, size, by_image[tuple(size)]))
    assert m["f1"] == 1.0 and m["mean_iou"] > 0.98
    swapped = {s: f for s, f in zip(SIZES, reversed(frames))}
    bad = run(texts, lambda box, size: from_model_frame(box, size, swapped[tuple(size)]))
    assert (bad["tp"], bad["f1"]) == (0, 0.0)


def test_missing_and_unparsable_answers_are_all_false_negatives():
    m = run([None, "no idea"])
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 3)
    assert m["json_valid"] == 0 and m["schema_complete"] is None and m["map"] == 0
    assert m["overall"] == 0 and m["instruction_accuracy"] == 0
    assert sorted(r["predicted"] for r in m["confusion"]) == ["background"] * 3


def test_wrong_class_duplicate_and_shifted_boxes():
    texts = [
        answer([("Hammer", [64, 48, 320, 240]), ("Hammer", [64, 48, 320, 240]),  # duplicate
                ("Wrench", [400, 100, 600, 400])]),  # right box, wrong class
        answer([("Wrench", [250, 30, 450, 150])]),  # shifted: IoU 50/350 < 0.5
    ]
    m = run(texts)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 3, 2)
    assert m["object_hallucination"] == pytest.approx(1 / 4)  # the Wrench in image 0
    cells = {(r["actual"], r["predicted"]) for r in m["confusion"]}
    assert ("Drill", "Wrench") in cells and ("background", "Hammer") in cells
    assert ("Wrench", "background") in cells


def test_tools_named_outside_the_17_are_false_positives_and_hallucinated():
    # one correct tool and three boxes named "Whatsit": not precision 1.0 and no hallucination
    whatsits = [("Whatsit", [10 * k, 10, 10 * k + 20, 40]) for k in range(1, 4)]
    texts = [answer([("Hammer", [64, 48, 320, 240])]), None]
    texts[0] = json.dumps({"tools": [*json.loads(texts[0])["tools"],
                                     *({"name": n, "bbox_2d": b, "required_ppe": ["gloves"]} for n, b in whatsits)]})
    m = run(texts)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 3, 2)
    assert m["precision"] == pytest.approx(0.25) and m["f1"] == pytest.approx(2 / 7)
    assert m["name_f1"] == pytest.approx(2 / 7)
    assert m["object_hallucination"] == pytest.approx(0.75)
    assert m["hallucination"]["objects"]["per_class"] == {"unknown": 3}
    assert m["map_50"] == pytest.approx(1 / 3)  # one Hammer found of three truths; Whatsits rank in no class
    assert sum(r["predicted"] == "unknown" for r in m["confusion"]) == 3
    assert m["answers"][0]["tools"] == 4


def test_claims_about_an_unknown_tool_are_unsupported():
    checker = ClaimChecker(KB, embedder=None)  # never asked to embed: no entry to compare with
    text = json.dumps({"tools": [{"name": "Whatsit", "bbox_2d": [0, 0, 10, 10],
                                  "required_ppe": ["gloves"], "primary_hazards": ["cuts"]}]})
    m = run([text, None], claims=checker)
    assert m["hallucination"]["claims"]["claims"] == 2 and m["claim_hallucination"] == 1.0


def test_invalid_answers_are_counted_by_reason():
    def tool(name, written):
        return {**KB.safety_fields(name), "name": written, "bbox_2d": [0, 0, 10, 10]}

    texts = ['{"tools": []}', "no idea", json.dumps({"tools": [tool("Wrench", "spanners")]}),
             json.dumps({"tools": [tool("Gas wrench", "pipe wrench"), tool("Hammer", "Whatsit")]})]
    m = evaluate_answers(texts, [[]] * 4, [(100, 100)] * 4, claims=False)
    assert m["invalid_answers"] == {"answers": 3, "by_reason": {
        "tool: name … mapped to …": 2, "no JSON object in the text": 1,
        "tool: unknown tool name …; not in the report, scored as a false positive": 1}}
    assert metrics_document({"f": {"c": m}})["f"]["c"]["invalid_answers"] == m["invalid_answers"]


def test_a_crash_of_the_parser_fails_naming_the_answer(monkeypatch):
    import safetyvlm.parse as parse_mod

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in the parser")

    monkeypatch.setattr(parse_mod, "_as_tool", broken)
    served = parse_mod.parse_report(answers_in(None)[1])  # the service still gets an (invalid) answer
    assert not served.valid and isinstance(served.crash, ZeroDivisionError)
    with pytest.raises(RuntimeError, match=r"crashed on answer 1 \('\{\"tools\": \[\{\"name\": \"Wrench\".*"
                                           r"ZeroDivisionError: a bug in the parser"):
        run([None, answers_in(None)[1]])


def test_map_ranks_boxes_by_the_models_confidence_not_by_their_order():
    # two Hammer boxes for one Hammer: a miss and a hit. Without scores every box is 1.0 and COCO keeps
    # the answer's order, so AP@.5 is 0.5 or 1.0 by the order alone; ranked by the probability of
    # each name's tokens (the hit's is higher), it is 1.0 both ways.
    hit, miss = ("Hammer", [64, 48, 320, 240]), ("Hammer", [0, 300, 100, 400])
    truths, sizes = [TRUTHS[0][:1]], SIZES[:1]
    for order, logprobs in (([miss, hit], [-2.0, -0.1]), ([hit, miss], [-0.1, -2.0])):
        text = answer(order)
        plain = evaluate_answers([text], truths, sizes, claims=False)
        scored = evaluate_answers([text], truths, sizes, claims=False,
                                  token_logprobs=[name_logprobs(text, logprobs)])
        assert plain["map_50"] == pytest.approx(0.5 if order[0] == miss else 1.0)
        assert scored["map_50"] == pytest.approx(1.0)
        assert (scored["precision"], scored["recall"]) == (0.5, 1.0)  # F1 at one threshold: order-free


def test_grounded_scores_the_knowledge_base_text_the_service_returns():
    # the right tool in the right place, with safety text the knowledge base does not hold
    wrong_text = {"primary_function": "Writes poems", "required_ppe": ["none needed"],
                  "primary_hazards": ["boredom"], "common_misuses": ["every use is fine"]}
    tools = [{"name": "Hammer", "bbox_2d": [64, 48, 320, 240], **wrong_text},
             {"name": "Whatsit", "bbox_2d": [400, 100, 600, 400], **wrong_text}]
    texts = [json.dumps({"tools": tools}), answers_in(None)[1]]
    own, grounded = run(texts), run(texts, ground=True)
    assert own["safety_fields"]["primary_function"] == 0.5 and own["safety_agreement"] < 1
    assert grounded["safety_agreement"] == 1.0 and grounded["safety_fields"]["tools"] == 2
    assert grounded["judge"]["primary_function"] > own["judge"]["primary_function"]
    for key in ("tp", "fp", "fn", "precision", "map", "json_valid", "object_hallucination"):
        assert grounded[key] == own[key], key  # the same answers: detection and validity unchanged


def test_boxes_outside_the_image_are_clipped_or_dropped():
    texts = [answer([("Hammer", [64, 48, 320, 240]), ("Drill", [700, 500, 800, 600])]), None]
    m = run(texts)
    assert m["boxes_dropped"] == 1 and m["tp"] == 1


def test_claims_and_embedding_judge(request):
    checker = ClaimChecker(KB, load_embedder(),
                           cache_dir=request.config.cache.mkdir("safetyvlm-kb-embeddings"))
    tool = {"name": "Hammer", "bbox_2d": [64, 48, 320, 240],
            "primary_function": "Drives nails", "required_ppe": ["safety glasses"],
            "primary_hazards": ["struck fingers and thumbs", "kickback when the drill bit binds"],
            "common_misuses": ["using the handle as a pry bar"]}
    texts = [json.dumps({"tools": [tool]}), answers_in(None)[1]]
    m = run(texts, claims=checker)
    n_kb = sum(len(KB.safety_fields("Wrench")[f])
               for f in ("required_ppe", "primary_hazards", "common_misuses"))
    assert m["hallucination"]["claims"]["claims"] == 4 + n_kb
    assert m["hallucination"]["claims"]["unsupported"] == 1
    assert m["claim_hallucination"] == pytest.approx(1 / (4 + n_kb))
    assert m["judge"]["judge"] == "local" and 0 < m["overall"] < 10


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="answers"):
        evaluate_answers(["{}"], TRUTHS, SIZES, claims=False)
