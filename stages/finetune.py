"""finetune stage: one (family, strategy) of the matrix -> models/finetune/<family>-<strategy>/, its metrics
(metrics/detail/finetune/<run>.json; headline metrics/finetune/<run>.json) and curves (metrics/live/finetune/<run>)."""

import json
import logging
import sys

import yaml

from safetyvlm import headline
from safetyvlm.io import atomic_write_json
from safetyvlm.model.presets import base_model_path
from safetyvlm.train.distributed import is_main_process, relaunch_if_distributed
from safetyvlm.train.sft import FinetuneConfig, finetune

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
family, strategy = sys.argv[1], sys.argv[2]
all_params = yaml.safe_load(open("params.yaml"))
cfg = FinetuneConfig.from_dict(all_params["finetune"])
relaunch_if_distributed(cfg.distributed, cfg.processes, __file__, [family, strategy])  # torchrun, when set
retriever = None
if cfg.rag_fraction > 0:  # samples with retrieved passages need the rag-index stage's index
    from safetyvlm.rag.config import RagConfig
    from safetyvlm.rag.index import load_retriever

    retriever = load_retriever("data/rag", RagConfig.from_dict(all_params["rag"]))
name = f"{family}-{strategy}"
metrics = finetune(base_model_path(f"models/base/{family}"), "data/dataset", family, strategy, cfg,
                   f"models/finetune/{name}", retriever=retriever, live_dir=f"metrics/live/finetune/{name}")
if not is_main_process():
    sys.exit(0)
atomic_write_json(f"metrics/detail/finetune/{name}.json", metrics)
headline.write(f"metrics/finetune/{name}.json", headline.finetune(metrics))
print(json.dumps({k: metrics.get(k) for k in ("family", "strategy", "train_seconds", "final_loss")}))
