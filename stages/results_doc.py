"""results-doc stage: docs/results.md, the tables of measured figures, from metrics/eval.json,
metrics/finetune/*.json and metrics/rag.json (never copied by hand)."""

from safetyvlm.eval.docs import write_results_doc

print(write_results_doc("metrics", "docs/results.md"))
