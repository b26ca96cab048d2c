"""Quality and speed of the bases and the finetune matrix on the synthetic valid split.

Prints one row per model: JSON validity, name F1, detection P/R/F1@0.5, mean IoU, agreement of the
safety fields with the knowledge base, and seconds per image; plus an untrained (random-init) preset
as the floor. Run after `dvc repro` (it reads models/base, models/finetune and data/dataset):

    python benchmarks/model_quality.py --images 200
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--dataset", default="data/dataset")
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()

    import torch

    from safetyvlm.data.dataset import load_dataset_dir
    from safetyvlm.model.loader import load_model
    from safetyvlm.model.presets import build_preset_parts
    from safetyvlm.train.base import tokenizer_texts
    from safetyvlm.train.sft import evaluate_reports

    torch.set_num_threads(os.cpu_count() or 1)
    valid = load_dataset_dir(args.dataset)["valid"]
    rows = []

    def score(label: str, family: str, model, processor, train_seconds=None):
        start = time.perf_counter()
        m = evaluate_reports(model, processor, family, valid, args.images, 25, args.max_new_tokens)
        rows.append({"model": label, "family": family, "json_valid": m["json_valid"], "name_f1": m["name_f1"],
                     "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
                     "mean_iou": m["mean_iou"], "safety": m["safety_agreement"]["mean"],
                     "s_per_image": m["seconds_per_image"], "train_s": train_seconds,
                     "eval_s": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)

    for family in ("qwen2_5_vl", "mllama"):
        model, processor, _ = build_preset_parts(family, "tiny", tokenizer_texts())
        score("untrained tiny", family, model.float(), processor)
        for d in sorted(Path("models/finetune").glob(f"{family}-*")):
            model, processor, _ = load_model(d / "merged", dtype="float32")
            info = json.loads((d / "metrics.json").read_text())
            score(f"finetune {info['strategy']}", family, model, processor, info["train_seconds"])
    cols = ["model", "family", "json_valid", "name_f1", "precision", "recall", "f1", "mean_iou", "safety",
            "s_per_image", "train_s"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
