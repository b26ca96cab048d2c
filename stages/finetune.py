"""finetune stage: one (family, strategy) of the matrix -> models/finetune/<family>-<strategy>/."""

import json
import logging
import sys

import yaml

from safetyvlm.io import atomic_write_json
from safetyvlm.model.base import base_model_path
from safetyvlm.model.finetune import FinetuneConfig, finetune

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
family, strategy = sys.argv[1], sys.argv[2]
params = yaml.safe_load(open("params.yaml"))["finetune"]
cfg = FinetuneConfig.from_dict({k: v for k, v in params.items() if k not in ("families", "strategies")})
name = f"{family}-{strategy}"
metrics = finetune(base_model_path(f"models/base/{family}"), "data/dataset", family, strategy, cfg,
                   f"models/finetune/{name}")
atomic_write_json(f"metrics/finetune/{name}.json", metrics)
atomic_write_json(f"metrics/finetune/{name}-loss.json", json.load(open(f"models/finetune/{name}/train_log.json")))
print(json.dumps({k: metrics.get(k) for k in ("family", "strategy", "train_seconds", "final_loss")}))
