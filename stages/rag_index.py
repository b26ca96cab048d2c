"""rag-index stage: params.yaml `rag:` -> data/rag/ (chunks, vectors, manifest, store) + metrics/detail/rag.json
(headline: metrics/rag.json)."""

import yaml

from safetyvlm import headline
from safetyvlm.rag.config import RagConfig
from safetyvlm.rag.index import run_rag_index

cfg = RagConfig.from_dict(yaml.safe_load(open("params.yaml")).get("rag"))
m = run_rag_index(cfg, "data/rag", "metrics/detail/rag.json")
headline.write("metrics/rag.json", headline.rag(m))
print(f"rag-index ({m['vector_store']}, rerank {m['rerank']}): {m['chunks']} chunks of {m['passages']} passages; "
      f"{m['queries']} queries: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if "@" in k or k == "mrr"))
