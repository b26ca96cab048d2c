"""Retrieval over the knowledge-base corpus: chunk, embed, store (faiss | pgvector | pinecone), retrieve,
rerank (category boost, MMR), evaluate. Answering with the passages is `safetyvlm.answer.answer_with_retrieval`.

    from safetyvlm.rag import RagConfig, build_index, load_retriever
    cfg = RagConfig.from_dict(yaml.safe_load(open("params.yaml"))["rag"])
    retriever = load_retriever("data/rag", cfg)
    retriever.retrieve(["Drill", "Hammer"], k=5)          # -> [RetrievedPassage(id, score, text, ...)]

Heavy imports (sentence-transformers, faiss, store clients) happen on first use, not at import.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "RagConfig": "safetyvlm.rag.config",
    "ChunkingConfig": "safetyvlm.rag.config",
    "RetrieveConfig": "safetyvlm.rag.config",
    "PgvectorConfig": "safetyvlm.rag.config",
    "PineconeConfig": "safetyvlm.rag.config",
    "chunk_passages": "safetyvlm.rag.chunking",
    "SentenceTransformerEmbeddings": "safetyvlm.rag.embed",
    "load_embeddings": "safetyvlm.rag.embed",
    "FaissVectorStore": "safetyvlm.rag.faiss_store",
    "ToolRetriever": "safetyvlm.rag.retrieve",
    "RetrievedPassage": "safetyvlm.rag.retrieve",
    "boost_scores": "safetyvlm.rag.rerank",
    "mmr_select": "safetyvlm.rag.rerank",
    "build_index": "safetyvlm.rag.index",
    "load_retriever": "safetyvlm.rag.index",
    "run_rag_index": "safetyvlm.rag.index",
    "build_query_set": "safetyvlm.rag.evaluate",
    "evaluate_retriever": "safetyvlm.rag.evaluate",
    "score_rankings": "safetyvlm.rag.evaluate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'safetyvlm.rag' has no attribute {name!r}")
