"""The finetune recipe on this machine's CPU: one LoRA finetune per config, its time and its answers.

    python benchmarks/finetune_recipe.py qwen2_5_vl vision_language TAG '{steps: 150, train_lm_head: false}'

runs `safetyvlm.train.sft.finetune` on the pipeline's own inputs (models/base, data/dataset, data/rag:
run `dvc repro base rag-index dataset` first) with params.yaml's `finetune:` overridden by the YAML mapping,
scores the merged model on the valid split, prints one `RESULT` line and merges it into
`benchmarks/results/finetune_recipe.json` (by tag); `--doc` rewrites `docs/finetune-recipe.md` from that
file. The loss curve of each run is kept in the JSON. Train seconds depend on what else runs on the cores.

    python benchmarks/finetune_recipe.py --retrieval TAG

scores run TAG's merged model (still under /tmp/finetune_recipe/TAG) on the same valid images answered in
two passes with retrieval (data/rag), as the eval stage's "+ RAG" row does, and records it with the run:
`rag_fraction` trades the plain answers against the ones with passages in the prompt.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import yaml

RESULTS = Path("benchmarks/results/finetune_recipe.json")
DOC = Path("docs/finetune-recipe.md")


def run(family: str, strategy: str, tag: str, overrides: dict) -> dict:
    from safetyvlm.rag.config import RagConfig
    from safetyvlm.rag.index import load_retriever
    from safetyvlm.train.sft import FinetuneConfig, finetune

    params = yaml.safe_load(Path("params.yaml").read_text())
    cfg = FinetuneConfig.from_dict({**params["finetune"], **overrides})
    retriever = load_retriever("data/rag", RagConfig.from_dict(params["rag"])) if cfg.rag_fraction > 0 else None
    start = time.perf_counter()
    m = finetune(f"models/base/{family}", "data/dataset", family, strategy, cfg, f"/tmp/finetune_recipe/{tag}",
                 retriever=retriever)
    curve = json.loads(Path(f"/tmp/finetune_recipe/{tag}/train_log.json").read_text())
    v = m.get("valid", {})
    return {"tag": tag, "family": family, "strategy": strategy, "overrides": overrides, "config": asdict(cfg),
            "date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
            "wall_seconds": round(time.perf_counter() - start, 1), "train_seconds": m["train_seconds"],
            "final_loss": m["final_loss"], "valid_images": v.get("images"),
            **{k: v.get(k) for k in ("json_valid", "name_f1", "f1", "mean_iou", "seconds_per_image")},
            # agreement is over matched tools: none matched, no figure
            "safety_agreement": (v.get("safety_agreement") or {}).get("mean") if (v.get("safety_agreement") or {}).get("tools") else None,
            "example_answer": v.get("example_answer", "")[:300], "loss_curve": curve}


def run_retrieval(result: dict) -> dict:
    """The run's model on its valid images with retrieval (two passes): rag_* fields for its row."""
    from safetyvlm.data.dataset import load_dataset_dir
    from safetyvlm.eval.run import EvalConfig, evaluate_model
    from safetyvlm.rag.config import RagConfig
    from safetyvlm.rag.index import load_retriever

    params = yaml.safe_load(Path("params.yaml").read_text())
    cfg = EvalConfig.from_dict({**params["eval"], "families": [result["family"]], "latency_images": 0})
    valid = load_dataset_dir("data/dataset")["valid"]
    rows = valid.select(range(min(result["valid_images"], len(valid))))
    retriever = load_retriever("data/rag", RagConfig.from_dict(params["rag"]))
    m, _ = evaluate_model(f"/tmp/finetune_recipe/{result['tag']}/merged", result["family"], rows, cfg,
                          retriever=retriever)
    return {"rag_json_valid": m["json_valid"], "rag_name_f1": m["name_f1"], "rag_f1": m["f1"],
            "rag_safety_agreement": m["safety_agreement"]}  # None where no tool matched


def _cell(v, digits=2):
    return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def write_doc(results: dict) -> Path:
    head = ["tag", "family / strategy", "overrides of params.yaml finetune", "train s", "final loss",
            "JSON valid", "name F1", "det F1", "mean IoU", "safety agreement",
            "+ RAG: JSON valid", "+ RAG: name F1", "+ RAG: det F1", "date"]
    rows = [[r["tag"], f"{r['family']} / {r['strategy']}", json.dumps(r["overrides"]), _cell(r["train_seconds"], 0),
             _cell(r["final_loss"]), _cell(r["json_valid"]), _cell(r["name_f1"]), _cell(r["f1"]),
             _cell(r["mean_iou"]), _cell(r["safety_agreement"]), _cell(r.get("rag_json_valid")),
             _cell(r.get("rag_name_f1")), _cell(r.get("rag_f1")), r["date"]] for r in results.values()]
    curves = ["| tag | training loss at each logged step (step: loss) |", "|---|---|"]
    curves += [f"| {r['tag']} | " + " ".join(f"{h['step']}: {_cell(h['loss'], 2)}" for h in r["loss_curve"]) + " |"
               for r in results.values()]
    text = ("# The finetune recipe on 2 CPU cores\n\n"
            "Generated by `python benchmarks/finetune_recipe.py --doc` from `benchmarks/results/finetune_recipe.json`"
            " (each row one run of `benchmarks/finetune_recipe.py`; valid-split answers, greedy). Train seconds"
            " depend on what else ran on the two cores. Overrides are relative to params.yaml on the run's date"
            " (`finetune.rag_fraction` was 0.3 until 2026-12-05, 0.1 that day, 0 since 2026-12-06; newer runs"
            " also record their whole config in the JSON). Runs A-R started from the bases shipped before"
            " segments 7 and 8 (models/shipped/PROVENANCE.md), S-AC from those, AD-AG from segment 9's (on 100"
            " valid images, the others on 50), AH-AK from segment 11's. `finetune.group_by_length` was false"
            " until 2026-12-07, true since (AE / AG against"
            " AD / AF: -30% and -37% train time, valid name F1 -0.005 and -0.027)."
            " \"+ RAG\": the same model on the same valid images answered in two passes with retrieval"
            " (`--retrieval TAG`; – where not measured).\n\n"
            + "| " + " | ".join(head) + " |\n|" + "|".join(["---"] * 3 + ["---:"] * 10 + ["---"]) + "|\n"
            + "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n\n## Loss curves\n\n" + "\n".join(curves) + "\n")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    return DOC


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("family", nargs="?")
    ap.add_argument("strategy", nargs="?")
    ap.add_argument("tag", nargs="?")
    ap.add_argument("overrides", nargs="?", default="{}")
    ap.add_argument("--doc", action="store_true", help="only rewrite docs/finetune-recipe.md")
    ap.add_argument("--retrieval", metavar="TAG", help="score run TAG's model with retrieval and record it")
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.retrieval:
        results[args.retrieval].update(run_retrieval(results[args.retrieval]))
        print("RESULT", json.dumps({k: v for k, v in results[args.retrieval].items() if k.startswith("rag_")}))
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    elif not args.doc:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        r = run(args.family, args.strategy, args.tag, yaml.safe_load(args.overrides) or {})
        print("RESULT", json.dumps({k: v for k, v in r.items() if k != "loss_curve"}))
        results[r["tag"]] = r
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(write_doc(results))


if __name__ == "__main__":
    main()
