"""Score a base on the pretraining's evaluation scenes, with and without retrieval passages in the prompt.

    python benchmarks/base_eval.py models/shipped/qwen2_5_vl-tiny            # 40 scenes, report prompt
    python benchmarks/base_eval.py models/shipped/mllama-tiny --images 200 --task detect
    python benchmarks/base_eval.py <dir> --passages-only
    python benchmarks/base_eval.py <dir> --images 200 --shifted
    python benchmarks/base_eval.py <dir> --images 100 --shifted-factors

The scenes are those every segment is scored on (`base.train.eval_seed`, `eval_render`); with passages each
prompt carries the scene's own corpus passages (`data.mixture.scene_passages`), as a retriever that found
the right tools would give. Prints one JSON line per condition (`evaluate_base`'s summary).
`--shifted` scores the same scenes rendered with the shifted test set's overrides (`eval_shifted`), as
a segment's record does. `--shifted-factors` scores the detect prompt with each of those overrides
(surfaces, light, sizes, clutter) alone and all together: which shift costs the most.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from safetyvlm.model.loader import load_model, read_family
from safetyvlm.train.pretrain import BaseTrainConfig, evaluate_base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="a base directory (models/shipped/<family>-tiny, models/base/<family>)")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--task", choices=("report", "detect"), default="report")
    ap.add_argument("--passages-only", action="store_true")
    ap.add_argument("--shifted", action="store_true", help="the scenes with eval_shifted's overrides")
    ap.add_argument("--shifted-factors", action="store_true")
    ap.add_argument("--batch-size", type=int, default=20)
    args = ap.parse_args()
    family = read_family(Path(args.base))
    model, processor, _ = load_model(args.base, family=family, dtype="float32", device="auto")
    model.eval()
    cfg = BaseTrainConfig()
    tokens = cfg.report_tokens if args.task == "report" else cfg.max_new_tokens
    if args.shifted_factors:
        variants = {"none": {}, **{k: {k: v} for k, v in cfg.eval_shifted.items()}, "all": cfg.eval_shifted}
        for name, overrides in variants.items():
            start = time.perf_counter()
            s = evaluate_base(model, processor, family, n=args.images, seed=cfg.eval_seed,
                              render={**cfg.eval_render, **overrides}, batch_size=args.batch_size,
                              max_new_tokens=cfg.max_new_tokens, task="detect")
            print(json.dumps({"base": args.base, "shifted": name, "name_f1": round(s["name_f1"], 3),
                              "det_f1": round(s["f1"], 3), "mean_iou": round(s["mean_iou"] or 0, 3),
                              "seconds": round(time.perf_counter() - start, 1)}))
        return
    for with_passages in ((True,) if args.passages_only else (False,) if args.shifted else (False, True)):
        start = time.perf_counter()
        render = {**cfg.eval_render, **cfg.eval_shifted} if args.shifted else cfg.eval_render
        summary = evaluate_base(model, processor, family, n=args.images, seed=cfg.eval_seed, render=render,
                                batch_size=args.batch_size, max_new_tokens=tokens, task=args.task,
                                with_passages=with_passages)
        summary.pop("example_answer")
        summary.pop("macro_f1", None)
        print(json.dumps({"base": args.base, "family": family, "passages": with_passages, "shifted": args.shifted,
                          **{k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()},
                          "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
