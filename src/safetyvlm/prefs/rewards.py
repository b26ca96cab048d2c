"""Verifiable scores of one answer, used to filter preference pairs and as GRPO rewards.

None of them needs a reference model or a judge: each compares the answer text with the image's
ground truth (names and boxes) or with the knowledge base. All are in [0, 1], higher is better.

* `json_validity`: 1 strict-valid contract JSON, 0.5 readable only after repair or with fixes, 0 none.
* `detection_quality`: half class-aware F1 at IoU >= 0.5 (one-to-one), half the mean over ground-truth
  tools of the best IoU of a same-class prediction (a soft term, so a box that is close but not yet
  at 0.5 still earns something). No tools and no predictions: 1.
* `safety_grounding`: over the predicted tools with a known name, the share of their PPE / hazard /
  misuse items and primary functions found in that tool's knowledge-base entry (after normalising
  case and punctuation). Nothing claimed: 0, unless the image has no tools.
* `format_length`: 1 for a bare JSON object within `max_chars`; chatter around it halves it;
  a truncated answer (no closing brace) scores 0; beyond `max_chars` it falls linearly to 0 at twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from safetyvlm.answer.read import read_answer
from safetyvlm.eval.detection import UNKNOWN, iou, match_image
from safetyvlm.eval.safety import _norm
from safetyvlm.kb import KnowledgeBase
from safetyvlm.model.boxes import ModelFrame
from safetyvlm.parse import ParseResult
from safetyvlm.schema import CATEGORIES, SAFETY_LISTS

REWARD_NAMES = ("json_validity", "detection_quality", "safety_grounding", "format_length")


def default_weights() -> dict[str, float]:
    """The weights of pair selection and of GRPO (params.yaml grpo.pairs.weights, grpo.grpo.weights)."""
    return {"json_validity": 1.0, "detection_quality": 1.0, "safety_grounding": 1.0, "format_length": 0.5}


def json_validity(parsed: ParseResult) -> float:
    if parsed.valid:
        return 1.0
    return 0.5 if parsed.json_ok and parsed.report.tools else 0.0


def detection_quality(preds: Sequence[Mapping], truths: Sequence[Mapping], threshold: float = 0.5) -> float:
    if not truths:
        return 1.0 if not preds else 0.0
    if not preds:
        return 0.0
    tp = len(match_image(list(preds), list(truths), threshold))
    f1 = 2 * tp / (len(preds) + len(truths))
    soft = sum(max((iou(p["bbox_2d"], t["bbox_2d"]) for p in preds if p["name"] == t["name"]), default=0.0)
               for t in truths) / len(truths)
    return 0.5 * f1 + 0.5 * soft


def safety_grounding(preds: Sequence[Mapping], kb: KnowledgeBase, has_tools: bool = True) -> float:
    found = total = 0
    for p in preds:
        if p["name"] not in kb.tools:
            continue
        ref = kb.safety_fields(p["name"])
        function = _norm(p.get("primary_function") or "")
        if function:
            total += 1
            found += function == _norm(ref["primary_function"])
        for f in SAFETY_LISTS:
            known = {_norm(x) for x in ref[f]}
            for item in p.get(f) or []:
                if _norm(item):
                    total += 1
                    found += _norm(item) in known
    if total == 0:
        return 0.0 if has_tools else 1.0
    return found / total


def format_length(text: str, max_chars: int = 2000) -> float:
    body = (text or "").strip()
    if not body or body.count("{") > body.count("}") or "}" not in body:
        return 0.0
    score = 1.0 if body.startswith("{") and body.endswith("}") else 0.5
    if len(body) > max_chars:
        score *= max(0.0, 1.0 - (len(body) - max_chars) / max_chars)
    return score


@dataclass
class AnswerScorer:
    """Scores answer texts of one model family against ground truth and the knowledge base."""

    frame: ModelFrame
    kb: KnowledgeBase
    weights: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(REWARD_NAMES, 1.0))
    max_chars: int = 2000
    iou_threshold: float = 0.5

    def __post_init__(self):
        unknown = set(self.weights) - set(REWARD_NAMES)
        if unknown:
            raise ValueError(f"unknown reward weights {sorted(unknown)}; known: {', '.join(REWARD_NAMES)}")
        if sum(self.weights.values()) <= 0:
            raise ValueError("reward weights must sum to more than 0")

    def scores(self, text: str, truths: Sequence[Mapping], image_size: Sequence[int]) -> dict[str, float]:
        """Every reward of one answer, plus `total` (the weighted mean)."""
        parsed = read_answer(text or "", image_size, self.frame)
        preds = predictions(parsed)
        truths = [{"name": t["name"], "bbox_2d": [float(v) for v in t["bbox_2d"]]} for t in truths
                  if t["name"] in CATEGORIES]
        s = {
            "json_validity": json_validity(parsed),
            "detection_quality": detection_quality(preds, truths, self.iou_threshold),
            "safety_grounding": safety_grounding(preds, self.kb, has_tools=bool(truths)),
            "format_length": format_length(text, self.max_chars),
        }
        s["total"] = sum(self.weights.get(k, 0.0) * s[k] for k in REWARD_NAMES) / sum(self.weights.values())
        return s

    def reward_functions(self) -> list:
        """One TRL reward function per reward name with a nonzero weight (weights go to
        `GRPOConfig.reward_weights`). Each reads the dataset's `instances` and `image_size` columns."""

        def make(name: str):
            def reward(completions, instances, image_size, **kwargs):
                return [self.scores(_completion_text(c), truths, size)[name]
                        for c, truths, size in zip(completions, instances, image_size)]
            reward.__name__ = name
            return reward

        return [make(n) for n in REWARD_NAMES if self.weights.get(n, 0.0) > 0]

    def active_weights(self) -> list[float]:
        return [float(self.weights[n]) for n in REWARD_NAMES if self.weights.get(n, 0.0) > 0]


def predictions(parsed: ParseResult) -> list[dict]:
    """The tools of an answer read in image pixels (the ground truth's frame), as dicts. Tools named outside
    the 17 come as class UNKNOWN, so a made-up name costs detection F1 as a wrong one does."""
    return [t.model_dump() for t in parsed.report.tools] + [{**u, "name": UNKNOWN} for u in parsed.unknown]


def _completion_text(completion) -> str:
    """TRL passes conversational completions as `[{"role": "assistant", "content": ...}]`."""
    if isinstance(completion, str):
        return completion
    content = completion[0]["content"] if completion else ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    return str(content)
