"""All metrics of one condition (one model, one setting) from its answer texts and the ground truth.

`evaluate_answers` reads each text into a report in original-image pixels (`answer.read_answer`, with
the family's box frame, or the caller's box function), clips every box to the image, and scores. Tools
named outside the 17 categories (`ParseResult.unknown`) are scored as predictions of the class
`UNKNOWN`: false positives for precision and F1, hallucinated objects. A missing or
unparsable answer (None, or no JSON in it) has no predictions: every ground-truth tool of its image
is a false negative, and it counts as invalid JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

from safetyvlm.answer.read import BoxToPixels, read_answer
from safetyvlm.eval.bootstrap import intervals
from safetyvlm.eval.compliance import compliance_rates, invalid_answers
from safetyvlm.eval.detection import UNKNOWN, DetectionScores, coco_map, confusion_rows, match_image
from safetyvlm.eval.hallucination import ClaimChecker, claim_hallucination, object_hallucination
from safetyvlm.eval.judge import JudgeCase, LocalJudge, run_judge
from safetyvlm.eval.report import latency_summary
from safetyvlm.eval.safety import SafetyAgreement
from safetyvlm.kb import KnowledgeBase, ground_report, load_kb
from safetyvlm.model.boxes import ModelFrame
from safetyvlm.schema import SAFETY_FIELDS, SAFETY_LISTS

NO_SAFETY_FIELDS = {"primary_function": "", **{f: [] for f in SAFETY_LISTS}}


def _clip_to_image(box, image_size) -> list[float] | None:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = float(image_size[0]), float(image_size[1])
    x1, x2 = sorted((min(max(x1, 0.0), w), min(max(x2, 0.0), w)))
    y1, y2 = sorted((min(max(y1, 0.0), h), min(max(y2, 0.0), h)))
    return [x1, y1, x2, y2] if x2 > x1 and y2 > y1 else None


def evaluate_answers(
    texts: Sequence[str | None],
    truths: Sequence[Sequence[dict]],
    image_sizes: Sequence[tuple[int, int]],
    frame: ModelFrame | BoxToPixels | None = None,
    *,
    frame_sizes: Sequence[tuple[int, int]] | None = None,
    token_logprobs: Sequence | None = None,
    judge=None,
    claims: ClaimChecker | None | bool = None,
    kb: KnowledgeBase | None = None,
    latencies: Sequence[float] | None = None,
    iou_threshold: float = 0.5,
    ground: bool = False,
) -> dict:
    """Every metric of one condition.

    texts        the model's answer per image (None = no answer)
    truths       per image, ground-truth tools `{name, bbox_2d}` in original pixels
    image_sizes  per image, (width, height) of the original image
    frame        the frame the answers' boxes are in: the family's ModelFrame (`model.boxes.model_frame`),
                 or a function `(box, image_size) -> box in original pixels`; None when answers are in pixels
    frame_sizes  per image, (width, height) the parser clips boxes to; default the ModelFrame's extent
                 (with a function or None: no clipping while parsing)
    token_logprobs  per answer, (start, end, log-probability) of its generated tokens
                 (`generate_scored`): each tool's score, by which mAP ranks the boxes; None: no scores,
                 COCO then ranks every box 1.0 in the answer's order
    judge        an object with `judge(JudgeCase) -> Judgment | None`; default `LocalJudge`
    claims       a `ClaimChecker` for claim hallucination (and the local judge's similarity);
                 None builds one on the packaged MiniLM; False skips claim hallucination
    latencies    seconds per answer, for p50/p95
    ground       score what the service returns by default: each tool's safety fields are the KB
                 entry of its name (`kb.ground_report`), not the model's text. Validity stays the
                 text's verdict; a tool named outside the 17 (left out by the service) keeps counting
                 for detection but says nothing

    A crash of the parser itself (`ParseResult.crash`) raises, naming the answer: it is a bug to
    fix, not an invalid answer to count.

    Returns a flat dict of scalars (precision ... latency_p95), plus `invalid_answers` (count and
    counts by reason), `ci` (95% bootstrap intervals over images, `eval.bootstrap`), `per_image` (the
    counts they resample), `per_class`, `safety_fields`,
    `hallucination`, `judge` (dimension means, overall, judged/failed counts), `latency`,
    `confusion` (rows for a DVC confusion plot) and `answers` (per-answer parse errors and scores).
    """
    n = len(texts)
    if not (len(truths) == len(image_sizes) == n):
        raise ValueError(f"{n} answers, {len(truths)} truths, {len(image_sizes)} image sizes")
    if frame_sizes is not None and len(frame_sizes) != n:
        raise ValueError(f"{len(frame_sizes)} frame sizes for {n} answers")
    if token_logprobs is not None and len(token_logprobs) != n:
        raise ValueError(f"{len(token_logprobs)} token log-probability lists for {n} answers")
    kb = kb if kb is not None else load_kb()
    if claims is None:
        claims = ClaimChecker(kb)
    judge = judge if judge is not None else LocalJudge(claims=claims or None)

    parsed, predicted, dropped = [], [], 0
    for k, text in enumerate(texts):
        pr = read_answer(text, image_sizes[k], frame, frame_size=frame_sizes[k] if frame_sizes is not None else None,
                         token_logprobs=token_logprobs[k] if token_logprobs is not None else None)
        if pr.crash is not None:  # our bug, not the model's answer: scoring it as invalid would hide it
            raise RuntimeError(f"parse_report crashed on answer {k} ({str(text)[:200]!r}): "
                               f"{type(pr.crash).__name__}: {pr.crash}") from pr.crash
        if ground:
            pr.report = ground_report(pr.report, kb)
            pr.unknown = [{**u, **NO_SAFETY_FIELDS} for u in pr.unknown]
        parsed.append(pr)
        # A tool named outside the 17 is still a prediction: under the name UNKNOWN it matches no
        # truth, so it is a false positive and a hallucinated object.
        candidates = [{"name": t.name, **{f: getattr(t, f) for f in SAFETY_FIELDS}, "bbox_2d": t.bbox_2d,
                       "score": t.score} for t in pr.report.tools]
        candidates += [{**{f: u[f] for f in SAFETY_FIELDS}, "name": UNKNOWN, "written_name": u["name"],
                        "bbox_2d": u["bbox_2d"], "score": u["score"]} for u in pr.unknown]
        tools = []
        for tool in candidates:
            box = _clip_to_image(tool["bbox_2d"], image_sizes[k])
            if box is None:
                dropped += 1
                continue
            tools.append({**tool, "bbox_2d": box})
        predicted.append(tools)
    truths = [[{"name": t["name"], "bbox_2d": [float(v) for v in t["bbox_2d"]]} for t in ts]
              for ts in truths]

    det = DetectionScores(threshold=iou_threshold)
    agreement = SafetyAgreement()
    per_image = []  # the counts each headline metric sums, per image: bootstrap intervals resample them
    for pr, preds, ts in zip(parsed, predicted, truths):
        before = (det.tp, det.fp, det.fn, det.iou_sum, det.name_tp, det.name_fp, det.name_fn,
                  sum(agreement.sums.values()), agreement.count)
        det.add(preds, ts)
        for i, j, _ in match_image(preds, ts, iou_threshold):
            agreement.add(preds[i], kb.safety_fields(ts[j]["name"]))
        after = (det.tp, det.fp, det.fn, det.iou_sum, det.name_tp, det.name_fp, det.name_fn,
                 sum(agreement.sums.values()), agreement.count)
        row = dict(zip(("tp", "fp", "fn", "iou_sum", "name_tp", "name_fp", "name_fn", "agree_sum", "agree_n"),
                       (round(a - b, 6) for a, b in zip(after, before))))
        row["agree_sum"] = round(row["agree_sum"] / len(SAFETY_FIELDS), 6)  # per tool: mean of its fields
        per_image.append({**row, "valid": int(pr.valid)})
    d = det.summary()
    coco = coco_map(predicted, truths, list(image_sizes))
    for c, ap in coco["per_class_ap"].items():
        d["per_class"].setdefault(c, {"precision": 0.0, "recall": 0.0, "f1": 0.0})["ap"] = ap
    fmt = compliance_rates(parsed)
    safety = agreement.summary()
    objects = object_hallucination(predicted, truths)
    claim = claim_hallucination(predicted, claims) if claims else None

    # a judge reads the answer as the user gets it: grounded, that is the report's JSON
    shown = [pr.report.to_json() for pr in parsed] if ground else texts
    cases = [JudgeCase(text=text if isinstance(text, str) else "", parsed=pr, predicted=preds,
                       truths=ts, reference={t["name"]: kb.safety_fields(t["name"]) for t in ts},
                       image_size=tuple(size))
             for text, pr, preds, ts, size in zip(shown, parsed, predicted, truths, image_sizes)]
    judged = run_judge(judge, cases)
    per_answer = judged.pop("per_answer")
    lat = latency_summary(latencies) if latencies is not None else None

    return {
        "n_images": n,
        "precision": d["precision"],
        "recall": d["recall"],
        "f1": d["f1"],
        "macro_f1": d["macro_f1"],
        "mean_iou": d["mean_iou"],
        "name_f1": d["name_f1"],
        "tp": d["tp"],
        "fp": d["fp"],
        "fn": d["fn"],
        "map": coco["map"],
        "map_50": coco["map_50"],
        "map_75": coco["map_75"],
        "json_valid": fmt["json_valid"],
        "json_readable": fmt["json_readable"],
        "invalid_answers": invalid_answers(parsed),
        "schema_complete": fmt["schema_complete"],
        "safety_agreement": safety["mean"] if safety["tools"] else None,
        "object_hallucination": objects["rate"],
        "claim_hallucination": claim["rate"] if claim else None,
        "instruction_accuracy": judged["instruction_accuracy"],
        "overall": judged["overall"],
        "latency_p50": lat["p50"] if lat else None,
        "latency_p95": lat["p95"] if lat else None,
        "boxes_dropped": dropped,
        "ci": intervals(per_image),
        "per_image": per_image,
        "per_class": d["per_class"],
        "safety_fields": safety,
        "hallucination": {"objects": objects, "claims": claim},
        "judge": judged,
        "latency": lat,
        "confusion": confusion_rows(predicted, truths, iou_threshold),
        "answers": [{"valid": pr.valid, "errors": pr.errors[:10], "tools": len(preds),
                     "judgment": j} for pr, preds, j in zip(parsed, predicted, per_answer)],
    }
