"""Agreement of an answer's safety fields with the knowledge-base entry of the ground-truth tool.

Scored only on tools whose name and box match a ground-truth tool (detection decides *which* tool a
field belongs to; this decides whether what was said about it is right). Per field:
- `primary_function`: 1 if it equals the entry's text after normalising case, spaces and punctuation;
- list fields (`required_ppe`, `primary_hazards`, `common_misuses`): F1 between the normalised sets
  of items, so a missing or an invented item both cost.
"""

from __future__ import annotations

import re
from collections import defaultdict

from safetyvlm.schema import SAFETY_FIELDS


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", str(text).lower()).strip()


def field_agreement(field: str, predicted, reference) -> float:
    if field == "primary_function":
        return float(_norm(predicted) == _norm(reference) and bool(_norm(reference)))
    pred = {_norm(x) for x in predicted if _norm(x)}
    ref = {_norm(x) for x in reference if _norm(x)}
    if not pred and not ref:
        return 1.0
    both = len(pred & ref)
    if not both:
        return 0.0
    p, r = both / len(pred), both / len(ref)
    return 2 * p * r / (p + r)


class SafetyAgreement:
    """Accumulates per-field agreement over matched (prediction, reference) tool pairs."""

    def __init__(self):
        self.sums = defaultdict(float)
        self.count = 0

    def add(self, predicted: dict, reference: dict) -> None:
        self.count += 1
        for f in SAFETY_FIELDS:
            self.sums[f] += field_agreement(f, predicted.get(f, "" if f == "primary_function" else []), reference[f])

    def summary(self) -> dict:
        per_field = {f: (self.sums[f] / self.count if self.count else 0.0) for f in SAFETY_FIELDS}
        return {**per_field, "mean": sum(per_field.values()) / len(per_field), "tools": self.count}
