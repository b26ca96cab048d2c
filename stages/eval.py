"""eval stage: every condition of params.yaml `eval.conditions` for every family on the test split ->
metrics/eval.json, metrics/results.md, plots/eval/ (radar, heatmap, per-class bars, confusion rows)."""

import logging

import yaml

from safetyvlm.eval.report import write_report
from safetyvlm.eval.run import EvalConfig, run_eval
from safetyvlm.rag.config import RagConfig

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
params = yaml.safe_load(open("params.yaml"))
results = run_eval(EvalConfig.from_dict(params["eval"]), "data/dataset", "data/rag", RagConfig.from_dict(params["rag"]))
write_report(results, "metrics/eval.json", "metrics/results.md", "plots/eval")
print(open("metrics/results.md").read())
