"""95% bootstrap intervals over images, for one condition and for the difference of two.

Every headline metric is a ratio of sums over images (F1 = 2TP / (2TP + FP + FN), JSON valid = valid /
answers, ...), so one row of per-image counts (`COUNTS`) is enough to recompute it on any resample of the
images. A condition's interval resamples its images with replacement; a comparison resamples the *same*
image indices for both conditions (a paired bootstrap: both answered the same images), which is far
tighter than two separate intervals and is the one a claim "A beats B" must name. Percentile intervals,
a fixed seed, so a rerun gives the same figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

COUNTS = ("tp", "fp", "fn", "iou_sum", "name_tp", "name_fp", "name_fn", "valid", "agree_sum", "agree_n")
METRICS = ("f1", "name_f1", "json_valid", "mean_iou", "safety_agreement")
N_BOOT = 2000
LEVEL = 0.95


def _ratio(num, den):
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def metrics_from_sums(s: np.ndarray) -> dict[str, np.ndarray]:
    """The METRICS from summed COUNTS (last axis in COUNTS order); NaN where undefined."""
    c = {k: s[..., i] for i, k in enumerate(COUNTS)}
    det = 2 * c["tp"] + c["fp"] + c["fn"]
    name = 2 * c["name_tp"] + c["name_fp"] + c["name_fn"]
    return {
        "f1": np.where(det > 0, _ratio(2 * c["tp"], det), 0.0),
        "name_f1": np.where(name > 0, _ratio(2 * c["name_tp"], name), 0.0),
        "json_valid": _ratio(c["valid"], _n(s)),
        "mean_iou": _ratio(c["iou_sum"], c["tp"]),
        "safety_agreement": _ratio(c["agree_sum"], c["agree_n"]),
    }


def _n(s: np.ndarray) -> np.ndarray:
    # the image count rides along as the last column (see `_table`)
    return s[..., len(COUNTS)]


def _table(per_image: Sequence[Mapping]) -> np.ndarray:
    """(images, len(COUNTS) + 1): the counts per image, then a 1 per image (its count)."""
    return np.array([[float(r[k]) for k in COUNTS] + [1.0] for r in per_image], dtype=float).reshape(-1, len(COUNTS) + 1)


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    values = values[np.isfinite(values)]
    if values.size < 2:
        return None
    a = (1 - level) / 2
    lo, hi = np.quantile(values, [a, 1 - a])
    return [round(float(lo), 4), round(float(hi), 4)]


def intervals(per_image: Sequence[Mapping], *, n_boot: int = N_BOOT, seed: int = 0,
              level: float = LEVEL) -> dict[str, list[float] | None]:
    """{metric: [low, high]} for one condition; None where the metric is undefined (no image, no match)."""
    t = _table(per_image)
    if len(t) == 0:
        return {m: None for m in METRICS}
    sums = t[_indices(len(t), n_boot, seed)].sum(axis=1)
    boot = metrics_from_sums(sums)
    return {m: _interval(boot[m], level) for m in METRICS}


def paired_difference(a: Sequence[Mapping], b: Sequence[Mapping], metric: str, *, n_boot: int = N_BOOT,
                      seed: int = 0, level: float = LEVEL) -> dict:
    """`metric(a) - metric(b)` with its paired interval: both answered the same images, in the same order."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {METRICS}")
    ta, tb = _table(a), _table(b)
    if len(ta) != len(tb):
        raise ValueError(f"a paired comparison needs the same images: {len(ta)} vs {len(tb)}")
    point = metrics_from_sums(ta.sum(axis=0))[metric] - metrics_from_sums(tb.sum(axis=0))[metric]
    idx = _indices(len(ta), n_boot, seed)
    diff = metrics_from_sums(ta[idx].sum(axis=1))[metric] - metrics_from_sums(tb[idx].sum(axis=1))[metric]
    ci = _interval(diff, level)
    return {"metric": metric, "difference": None if not np.isfinite(point) else round(float(point), 4),
            "ci": ci, "significant": bool(ci and (ci[0] > 0 or ci[1] < 0))}
