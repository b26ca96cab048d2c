"""eval stage: every condition of params.yaml `eval.conditions` for every family on the test split ->
metrics/detail/eval.json (+ eval_comparisons.json), one headline file per row under metrics/eval/<family>/,
metrics/results.md, plots/eval/ (radar, heatmap, per-class bars, confusion rows)."""

import json
import logging

import yaml

from safetyvlm import headline
from safetyvlm.eval.report import write_report
from safetyvlm.eval.run import EvalConfig, run_eval
from safetyvlm.rag.config import RagConfig

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
params = yaml.safe_load(open("params.yaml"))
cfg = EvalConfig.from_dict({**params["eval"], "families": params["families"]})
results = run_eval(cfg, "data/dataset", "data/rag", RagConfig.from_dict(params["rag"]))
paths = write_report(results, "metrics/detail/eval.json", "metrics/results.md", "plots/eval")
headline.write_eval_rows(json.loads(paths["metrics"].read_text()), "metrics/eval")
print(open("metrics/results.md").read())
