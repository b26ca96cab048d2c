"""Detection scores by the standard definitions: class-aware, one-to-one matching at an IoU threshold.

A prediction is a true positive only if it has the ground truth's class and overlaps an *unmatched*
ground-truth box with IoU >= threshold. `match_image` is greedy over all same-class (prediction,
truth) pairs by descending IoU, whatever the predictions' scores: the best-overlapping pair is
matched first. (COCO instead takes the predictions in descending score order, each to its best free
truth; `coco_map` below does that through pycocotools.) A duplicate prediction of one object is a
false positive, never a second hit. The system we model counted any overlap as a hit; these numbers
are not comparable with that.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from safetyvlm.schema import CATEGORIES, CATEGORY_INDEX


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


def _prf(tp: int, fp: int, fn: int) -> tuple[float | None, float, float]:
    """(precision, recall, F1). Precision is None with no prediction: no rate, not a flattering or
    damning 0; recall and F1 stay 0 then, since the truths were missed."""
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
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
            "mean_iou": self.iou_sum / self.tp if self.tp else None,  # no matched pair: no mean
            "name_f1": nf,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "per_class": per_class,
        }


# ------------------------------------------------------------------------------------- COCO mAP
# COCOeval ranks detections by "score": the model's own probability of each tool's name
# (`ToolReport.score`, from the generation's log-probabilities). A prediction without one (text from
# elsewhere) gets 1.0; COCOeval's stable sort then keeps the answer's order, so its AP depends on
# the order the model listed the boxes in.

BACKGROUND = "background"
# The class of a predicted tool whose name is none of the 17 (`ParseResult.unknown`): it matches no
# truth, so it is a false positive; COCO mAP leaves it out (AP is per category, and it has none).
UNKNOWN = "unknown"


def coco_map(preds_per_image: list[list[dict]], truths_per_image: list[list[dict]],
             image_sizes: list[tuple[int, int]] | None = None) -> dict:
    """COCO box mAP@[.5:.95] and mAP@.5 with pycocotools' `COCOeval` over the 17 categories.

    Boxes are `[x1, y1, x2, y2]` pixels. An image with no answer is `preds=[]` (all misses).
    Returns `map`, `map_50`, `map_75` and `per_class_ap` (AP@[.5:.95] of each class that has ground
    truth); values are None where COCO has nothing to average (no ground truth at all).
    torchmetrics' MeanAveragePrecision would wrap the same pycocotools code but needs torchvision,
    which does not import in this stack (STACK.md §1).
    """
    import contextlib
    import io

    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(preds_per_image) != len(truths_per_image):
        raise ValueError(f"{len(preds_per_image)} answers for {len(truths_per_image)} images")
    empty = {"map": None, "map_50": None, "map_75": None, "per_class_ap": {}}
    images, annotations, detections = [], [], []
    for i, (preds, truths) in enumerate(zip(preds_per_image, truths_per_image), start=1):
        w, h = image_sizes[i - 1] if image_sizes else (0, 0)
        images.append({"id": i, "width": int(w), "height": int(h)})
        for t in truths:
            x1, y1, x2, y2 = (float(v) for v in t["bbox_2d"])
            annotations.append({"id": len(annotations) + 1, "image_id": i, "iscrowd": 0,
                                "category_id": CATEGORY_INDEX[t["name"]] + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        for p in preds:
            if p["name"] not in CATEGORY_INDEX:  # UNKNOWN: no category whose AP it could lower
                continue
            x1, y1, x2, y2 = (float(v) for v in p["bbox_2d"])
            detections.append({"image_id": i, "category_id": CATEGORY_INDEX[p["name"]] + 1,
                               "bbox": [x1, y1, x2 - x1, y2 - y1],
                               "score": 1.0 if p.get("score") is None else float(p["score"])})
    if not annotations:
        return empty
    if not detections:  # COCO.loadRes cannot take an empty list; nothing found means AP 0
        present = sorted({a["category_id"] for a in annotations})
        return {"map": 0.0, "map_50": 0.0, "map_75": 0.0,
                "per_class_ap": {CATEGORIES[c - 1]: 0.0 for c in present}}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CATEGORIES)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt.createIndex()
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()

    def _val(v: float) -> float | None:
        return None if v < 0 else float(v)

    # precision[T, R, K, A, M]: area "all" is A=0, maxDets 100 is M=-1.
    prec = ev.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = prec[:, :, k]
        if (p > -1).any():
            per_class[CATEGORIES[cat_id - 1]] = float(np.mean(p[p > -1]))
    return {"map": _val(ev.stats[0]), "map_50": _val(ev.stats[1]), "map_75": _val(ev.stats[2]),
            "per_class_ap": per_class}


# ---------------------------------------------------------------------------- confusion matrix


def confusion_pairs(preds: list[dict], truths: list[dict], threshold: float = 0.5) -> list[tuple[str, str]]:
    """(actual, predicted) per instance of one image, classes plus `BACKGROUND`.

    Predictions and truths are paired one-to-one by IoU >= `threshold` *regardless of class*
    (greedy by descending IoU, a same-class pair winning a tie), so a Hammer box labelled Wrench
    lands in cell (Hammer, Wrench). An unpaired prediction is (background, pred); an unpaired
    truth is (truth, background). A missing or unparsable answer is `preds=[]`.
    """
    cand = []
    for i, p in enumerate(preds):
        for j, t in enumerate(truths):
            v = iou(p["bbox_2d"], t["bbox_2d"])
            if v >= threshold:
                cand.append((-v, p["name"] != t["name"], i, j))
    cand.sort()
    used_p, used_t, pairs = set(), set(), []
    for _, _, i, j in cand:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            pairs.append((truths[j]["name"], preds[i]["name"]))
    pairs += [(BACKGROUND, p["name"]) for i, p in enumerate(preds) if i not in used_p]
    pairs += [(t["name"], BACKGROUND) for j, t in enumerate(truths) if j not in used_t]
    return pairs


def confusion_rows(preds_per_image: list[list[dict]], truths_per_image: list[list[dict]],
                   threshold: float = 0.5) -> list[dict]:
    """Rows for a DVC `confusion` plot: one `{"actual": ..., "predicted": ...}` per instance."""
    rows = []
    for preds, truths in zip(preds_per_image, truths_per_image, strict=True):
        rows += [{"actual": a, "predicted": p} for a, p in confusion_pairs(preds, truths, threshold)]
    return rows


def confusion_matrix(rows: list[dict]) -> tuple[list[str], list[list[int]]]:
    """(labels, counts[actual][predicted]) over the 17 categories, unknown and background, in that order."""
    labels = [*CATEGORIES, UNKNOWN, BACKGROUND]
    index = {n: k for k, n in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for r in rows:
        counts[index[r["actual"]]][index[r["predicted"]]] += 1
    return labels, counts
