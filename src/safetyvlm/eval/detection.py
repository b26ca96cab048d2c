"""Detection scores by the standard definitions: class-aware, one-to-one matching at an IoU threshold.

A prediction is a true positive only if it has the ground truth's class and overlaps an *unmatched*
ground-truth box with IoU >= threshold; matching is greedy by descending IoU (as COCO does per class),
so a duplicate prediction of one object is a false positive, never a second hit. The system we model
counted any overlap as a hit; these numbers are not comparable with that.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_image(preds: list[dict], truths: list[dict], threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one class-aware matching. Returns (pred index, truth index, IoU) per match."""
    pairs = []
    for i, p in enumerate(preds):
        for j, t in enumerate(truths):
            if p["name"] == t["name"]:
                v = iou(p["bbox_2d"], t["bbox_2d"])
                if v >= threshold:
                    pairs.append((v, i, j))
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    used_p, used_t, matches = set(), set(), []
    for v, i, j in pairs:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            matches.append((i, j, v))
    return matches


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


@dataclass
class DetectionScores:
    threshold: float = 0.5
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0
    name_tp: int = 0
    name_fp: int = 0
    name_fn: int = 0
    per_class: dict = field(default_factory=lambda: {"tp": Counter(), "fp": Counter(), "fn": Counter()})

    def add(self, preds: list[dict], truths: list[dict]) -> None:
        """Add one image. A missing/unparsable answer is `preds=[]`: all its truths are false negatives."""
        matches = match_image(preds, truths, self.threshold)
        self.tp += len(matches)
        self.fp += len(preds) - len(matches)
        self.fn += len(truths) - len(matches)
        self.iou_sum += sum(v for _, _, v in matches)
        mp = {i for i, _, _ in matches}
        mt = {j for _, j, _ in matches}
        for i, p in enumerate(preds):
            self.per_class["tp" if i in mp else "fp"][p["name"]] += 1
        for j, t in enumerate(truths):
            if j not in mt:
                self.per_class["fn"][t["name"]] += 1
        # name-only recognition: multiset overlap of names, boxes ignored
        pc, tc = Counter(p["name"] for p in preds), Counter(t["name"] for t in truths)
        both = sum((pc & tc).values())
        self.name_tp += both
        self.name_fp += sum(pc.values()) - both
        self.name_fn += sum(tc.values()) - both

    def summary(self) -> dict:
        p, r, f = _prf(self.tp, self.fp, self.fn)
        _, _, nf = _prf(self.name_tp, self.name_fp, self.name_fn)
        classes = sorted(set().union(*(c.keys() for c in self.per_class.values())))
        per_class = {}
        for c in classes:
            cp, cr, cf = _prf(self.per_class["tp"][c], self.per_class["fp"][c], self.per_class["fn"][c])
            per_class[c] = {"precision": cp, "recall": cr, "f1": cf}
        macro_f1 = sum(v["f1"] for v in per_class.values()) / len(per_class) if per_class else 0.0
        return {
            "precision": p,
            "recall": r,
            "f1": f,
            "macro_f1": macro_f1,
            "mean_iou": self.iou_sum / self.tp if self.tp else 0.0,
            "name_f1": nf,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "per_class": per_class,
        }
