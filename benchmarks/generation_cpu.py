"""Batched greedy answers on this machine's CPU: seconds per image for each KV cache and batch size, and
whether the answers are the same tokens as the first setting's (they should be: greedy either way).

    python benchmarks/generation_cpu.py [--images 100] [--settings static:100 static:100:whole ...]

runs `model.generate.generate_scored` with the report prompt on the first test images (data/dataset) for
each finetuned language model of params.yaml's families (models/finetune/<family>-language/merged; run
`dvc repro` first). Each family's first setting runs once before timing (warm-up). Prints one line per
setting and writes benchmarks/results/generation_cpu.json; eval.cache / eval.batch_size come from it.
A setting is CACHE:BATCH, with `:whole` for the whole batch decoding until its longest answer ends
(`generate_scored(prune=False)`) instead of finished answers leaving it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import yaml

RESULTS = Path("benchmarks/results/generation_cpu.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--settings", nargs="+", default=["static:100", "static:100:whole", "dynamic:100", "static:25"])
    args = ap.parse_args()
    from safetyvlm.data.dataset import load_dataset_dir
    from safetyvlm.model.generate import generate_scored
    from safetyvlm.model.loader import load_model

    families = yaml.safe_load(Path("params.yaml").read_text())["families"]
    rows = load_dataset_dir("data/dataset")["test"].select(range(args.images))
    images = [r["image"] for r in rows]
    out = []
    for family in families:
        model, processor, _ = load_model(f"models/finetune/{family}-language/merged", family=family, dtype="float32")
        first = None
        for i, setting in enumerate(args.settings):
            cache, batch, *whole = setting.split(":")
            if i == 0:  # warm-up: the first call pays for oneDNN's set-up
                generate_scored(model, processor, images[:4], max_new_tokens=16, batch_size=4, cache=cache)
            start = time.perf_counter()
            texts = [g.text for g in generate_scored(model, processor, images, max_new_tokens=400,
                                                     batch_size=int(batch), cache=cache, prune=not whole)]
            seconds = time.perf_counter() - start
            first = first or texts
            row = {"family": family, "cache": cache, "batch_size": int(batch), "pruned": not whole,
                   "images": len(images),
                   "seconds_per_image": round(seconds / len(images), 4),
                   "same_answers_as_first": sum(a == b for a, b in zip(first, texts))}
            print(json.dumps(row), flush=True)
            out.append(row)
    RESULTS.write_text(json.dumps({"date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
                                   "settings": args.settings, "runs": out}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
