"""results-doc stage: docs/results.md, the tables of measured figures, from metrics/detail/eval.json,
metrics/detail/finetune/*.json and metrics/detail/rag.json (never copied by hand)."""

from safetyvlm.eval.docs import write_results_doc

print(write_results_doc("metrics", "docs/results.md"))
