"""grpo-pairs stage: the fine-tuned model (grpo.strategy) answers train images with and without
retrieval -> data/pairs/<family>/ (a datasets dataset in TRL's VLM DPO format) + metrics/detail/pairs/<family>.json (headline: metrics/pairs/<family>.json)."""

import logging
import sys

import yaml

from safetyvlm import headline
from safetyvlm.data.dataset import load_dataset_dir
from safetyvlm.io import atomic_output_dir, atomic_write_json
from safetyvlm.model.loader import load_model
from safetyvlm.prefs.pairs import build_pairs
from safetyvlm.rag.config import RagConfig
from safetyvlm.rag.index import load_retriever
from safetyvlm.train.preferences import PrefsConfig

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
family = sys.argv[1]
params = yaml.safe_load(open("params.yaml"))
cfg = PrefsConfig.from_dict(params["grpo"])
model, processor, _ = load_model(f"models/finetune/{family}-{cfg.strategy}/merged", family=family, dtype="float32")
retriever = load_retriever("data/rag", RagConfig.from_dict(params["rag"]))
pairs, metrics = build_pairs(model, processor, family, load_dataset_dir("data/dataset")["train"], retriever, cfg.pairs)
with atomic_output_dir(f"data/pairs/{family}") as tmp:
    pairs.save_to_disk(str(tmp))
atomic_write_json(f"metrics/detail/pairs/{family}.json", metrics)
headline.write(f"metrics/pairs/{family}.json", headline.pairs(metrics))
print(f"{family}: kept {metrics['kept']} of {metrics['images']} pairs; chosen mean "
      f"{metrics['chosen_total'].get('mean', 0):.3f} vs rejected {metrics['rejected_total'].get('mean', 0):.3f}")
