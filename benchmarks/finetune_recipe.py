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

    python benchmarks/finetune_recipe.py --average TAG 0.5,0.7

scores weight averages of run TAG's merged model and its base (models/base/<family>, which must still be
the base the run started from): alpha * finetune + (1 - alpha) * base, tensor by tensor (WiSE-FT), on the
run's valid images, and records them with the run (a finetune that forgets some of the base's detection
might keep the new wording at a share of the change).

    python benchmarks/finetune_recipe.py --shifted TAG

scores run TAG's merged model and its base (models/base/<family>, as above) on the bases' 200 evaluation
scenes rendered with the shifted test set's settings (`benchmarks/base_eval.py --shifted`): fresh scenes, so
a recipe is chosen without looking at the test split.
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


def run(family: str, strategy: str, tag: str, overrides: dict, dataset: str = "data/dataset") -> dict:
    from safetyvlm.rag.config import RagConfig
    from safetyvlm.rag.index import load_retriever
    from safetyvlm.train.sft import FinetuneConfig, finetune

    params = yaml.safe_load(Path("params.yaml").read_text())
    cfg = FinetuneConfig.from_dict({**params["finetune"], **overrides})
    retriever = load_retriever("data/rag", RagConfig.from_dict(params["rag"])) if cfg.rag_fraction > 0 else None
    start = time.perf_counter()
    m = finetune(f"models/base/{family}", dataset, family, strategy, cfg, f"/tmp/finetune_recipe/{tag}",
                 retriever=retriever)
    curve = json.loads(Path(f"/tmp/finetune_recipe/{tag}/train_log.json").read_text())
    v = m.get("valid", {})
    return {"tag": tag, "family": family, "strategy": strategy, "overrides": overrides, "config": asdict(cfg),
            **({"dataset": dataset} if dataset != "data/dataset" else {}),
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


def run_average(result: dict, alphas: list[float]) -> list[dict]:
    """Run TAG's merged model averaged with its base at each alpha, scored on the run's valid images."""
    import shutil
    import tempfile

    from safetensors.torch import load_file, save_file

    from safetyvlm.data.dataset import load_dataset_dir
    from safetyvlm.eval.run import EvalConfig, evaluate_model

    params = yaml.safe_load(Path("params.yaml").read_text())
    cfg = EvalConfig.from_dict({**params["eval"], "families": [result["family"]], "latency_images": 0})
    valid = load_dataset_dir("data/dataset")["valid"]
    rows = valid.select(range(min(result["valid_images"], len(valid))))
    merged = Path(f"/tmp/finetune_recipe/{result['tag']}/merged")
    base = load_file(f"models/base/{result['family']}/model.safetensors")
    tuned = load_file(merged / "model.safetensors")
    if base.keys() != tuned.keys() or any(base[k].shape != tuned[k].shape for k in base):
        raise SystemExit(f"models/base/{result['family']} is not the base run {result['tag']} started from")
    out = []
    for alpha in alphas:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "averaged"
            shutil.copytree(merged, d)
            save_file({k: (alpha * tuned[k].float() + (1 - alpha) * base[k].float()).to(tuned[k].dtype) for k in tuned},
                      str(d / "model.safetensors"), metadata={"format": "pt"})
            m, _ = evaluate_model(str(d), result["family"], rows, cfg)
        out.append({"alpha": alpha, **{k: m[k] for k in ("json_valid", "name_f1", "f1", "safety_agreement")}})
        print("AVERAGE", json.dumps(out[-1]), flush=True)
    return out


def run_shifted(result: dict) -> dict:
    """Run TAG's merged model and its base on the bases' shifted evaluation scenes (report prompt)."""
    from safetyvlm.model.loader import load_model
    from safetyvlm.train.pretrain import BaseTrainConfig, evaluate_base

    cfg = BaseTrainConfig()
    out = {}
    dirs = (("model", f"/tmp/finetune_recipe/{result['tag']}/merged"), ("base", f"models/base/{result['family']}"))
    for name, d in dirs:
        model, processor, _ = load_model(d, family=result["family"], dtype="float32", device="auto")
        model.eval()
        s = evaluate_base(model, processor, result["family"], n=cfg.eval_images, seed=cfg.eval_seed,
                          render={**cfg.eval_render, **cfg.eval_shifted}, batch_size=20,
                          max_new_tokens=cfg.report_tokens, task="report")
        out[name] = {"images": cfg.eval_images, **{k: s[k] for k in ("json_valid", "name_f1", "f1", "mean_iou")}}
        print("SHIFTED", name, json.dumps(out[name]), flush=True)
    return out


def _cell(v, digits=2):
    return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _averages(results: dict) -> str:
    rows = [f"| {r['tag']} | {_cell(a['alpha'])} | {_cell(a['json_valid'])} | {_cell(a['name_f1'])} | {_cell(a['f1'])} "
            f"| {_cell(a['safety_agreement'])} |" for r in results.values() for a in r.get("averages", [])]
    if not rows:
        return ""
    return ("## Weight averages of a finetune and its base\n\n`--average TAG ALPHAS`: alpha x the run's merged model"
            " + (1 - alpha) x its base, on the run's valid images (alpha 0 is the base itself, alpha 1 the run's own"
            " row above).\n\n"
            "| run | alpha | JSON valid | name F1 | det F1 | safety agreement |\n|---|---:|---:|---:|---:|---:|\n"
            + "\n".join(rows) + "\n\n")


def _shifted(results: dict) -> str:
    rows = [f"| {r['tag']} | {_cell(r['shifted']['model']['json_valid'])} | {_cell(r['shifted']['model']['name_f1'])} "
            f"| {_cell(r['shifted']['model']['f1'])} | {_cell(r['shifted']['base']['name_f1'])} "
            f"| {_cell(r['shifted']['base']['f1'])} |" for r in results.values() if r.get("shifted")]
    if not rows:
        return ""
    return ("## Fresh scenes with the shifted test set's settings\n\n`--shifted TAG`: the run's model and its base on"
            " the bases' 200 evaluation scenes rendered with `base.train.eval_shifted` (report prompt; not the test"
            " split).\n\n| run | JSON valid | name F1 | det F1 | base: name F1 | base: det F1 |\n"
            "|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n")


def write_doc(results: dict) -> Path:
    head = ["tag", "family / strategy", "overrides of params.yaml finetune", "train s", "final loss",
            "JSON valid", "name F1", "det F1", "mean IoU", "safety agreement",
            "+ RAG: JSON valid", "+ RAG: name F1", "+ RAG: det F1", "date"]
    rows = [[r["tag"], f"{r['family']} / {r['strategy']}",
             json.dumps(r["overrides"]) + (f" on {r['dataset_note']}" if r.get("dataset_note") else ""),
             _cell(r["train_seconds"], 0),
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
            " valid images, AL-AY on 200, the others on 50), AH-AO from segment 11's, AP-AV from segment 13's, AY"
            " from Qwen's segment 15 (not shipped)."
            " `finetune.group_by_length` was false until 2026-12-07, true since (AE / AG against AD / AF: -30%"
            " and -37% train time, valid name F1 -0.005 and -0.027). On a CPU the loss came from TRL's chunked"
            " fused output layer until AS and from the model's own full logits since AT (`sft_trainer_class`):"
            " the same curve and answers in 0.64x the train time."
            " \"+ RAG\": the same model on the same valid images answered in two passes with retrieval"
            " (`--retrieval TAG`; – where not measured).\n\n"
            + "| " + " | ".join(head) + " |\n|" + "|".join(["---"] * 3 + ["---:"] * 10 + ["---"]) + "|\n"
            + "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n\n" + _averages(results) + _shifted(results)
            + "## Loss curves\n\n" + "\n".join(curves) + "\n")
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
    ap.add_argument("--dataset", default="data/dataset",
                    help="train on this dataset folder (its valid split must be data/dataset's)")
    ap.add_argument("--dataset-note", help="what --dataset differs in, for the doc's overrides column")
    ap.add_argument("--retrieval", metavar="TAG", help="score run TAG's model with retrieval and record it")
    ap.add_argument("--shifted", metavar="TAG", help="score run TAG's model and its base on fresh shifted scenes")
    ap.add_argument("--average", nargs=2, metavar=("TAG", "ALPHAS"),
                    help="score run TAG's model averaged with its base at each alpha (comma-separated)")
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.retrieval:
        results[args.retrieval].update(run_retrieval(results[args.retrieval]))
        print("RESULT", json.dumps({k: v for k, v in results[args.retrieval].items() if k.startswith("rag_")}))
    elif args.shifted:
        results[args.shifted]["shifted"] = run_shifted(results[args.shifted])
    elif args.average:
        tag, alphas = args.average
        results[tag]["averages"] = run_average(results[tag], [float(a) for a in alphas.split(",")])
    elif not args.doc:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        r = run(args.family, args.strategy, args.tag, yaml.safe_load(args.overrides) or {}, args.dataset)
        if args.dataset_note:
            r["dataset_note"] = args.dataset_note
        print("RESULT", json.dumps({k: v for k, v in r.items() if k != "loss_curve"}))
        results[r["tag"]] = r
    if not args.doc:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(write_doc(results))


if __name__ == "__main__":
    main()
