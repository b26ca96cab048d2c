"""base stage: params.yaml `base:` -> models/base/<family>/ (shipped weights, a fresh base, or a record)."""

import json
import logging
import sys

import yaml

from safetyvlm.train.base import prepare_base

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
family = sys.argv[1]
params = yaml.safe_load(open("params.yaml"))["base"]
record = prepare_base(
    family,
    params["models"][family],
    f"models/base/{family}",
    retrain=params["retrain"],
    train=params["train"],
)
print(json.dumps({k: record.get(k) for k in ("family", "preset", "name_or_path", "samples", "eval")}, indent=1))
