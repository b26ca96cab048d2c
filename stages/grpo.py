"""grpo stage: preference training (grpo.method: dpo on data/pairs | grpo with verifiable rewards) on
the fine-tuned model -> models/final/<family>/ (merged/ is the model to evaluate and package), its metrics
(metrics/detail/grpo/<family>.json; headline metrics/grpo/<family>.json) and curves (metrics/live/grpo/<family>)."""

import json
import logging
import sys

import yaml

from safetyvlm.data.dataset import load_dataset_dir
from safetyvlm import headline
from safetyvlm.io import atomic_write_json
from safetyvlm.prefs.pairs import load_pairs
from safetyvlm.train.distributed import is_main_process, relaunch_if_distributed
from safetyvlm.train.preferences import PrefsConfig, train_preferences

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
family = sys.argv[1]
params = yaml.safe_load(open("params.yaml"))
cfg = PrefsConfig.from_dict(params["grpo"])
ft = params["finetune"]
# several GPUs (or gloo CPU processes): the same finetune.distributed / processes as the finetune stage
relaunch_if_distributed(ft.get("distributed", "none"), ft.get("processes"), __file__, [family])
metrics = train_preferences(
    f"models/finetune/{family}-{cfg.strategy}/merged", family, cfg, f"models/final/{family}",
    pairs=load_pairs(f"data/pairs/{family}") if cfg.method == "dpo" else None,
    train_split=load_dataset_dir("data/dataset")["train"] if cfg.method == "grpo" else None,
    backend=ft.get("backend", "auto"), load_in_4bit=ft.get("load_in_4bit", False),
    gradient_checkpointing=ft.get("gradient_checkpointing", False), distributed=ft.get("distributed", "none"),
    live_dir=f"metrics/live/grpo/{family}")
if not is_main_process():
    sys.exit(0)
atomic_write_json(f"metrics/detail/grpo/{family}.json", metrics)
headline.write(f"metrics/grpo/{family}.json", headline.preference(metrics))
print(json.dumps({k: metrics[k] for k in ("family", "method", "train_seconds", "first", "last")}))
