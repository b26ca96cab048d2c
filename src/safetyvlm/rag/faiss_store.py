"""A small LangChain `VectorStore` over a raw faiss `IndexFlatIP` (no langchain-community).

Vectors come from the `Embeddings` already normalised, so the inner product is the cosine similarity and
`similarity_search_with_score` returns it directly (higher is closer). Documents keep their ids; adding
an id that is already present replaces it (an upsert, like pgvector and Pinecone).

On disk (`save_local`): `index.faiss` and `chunks.jsonl` (one `{id, page_content, metadata}` a line,
in index order).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from safetyvlm.rag.rerank import mmr_select

INDEX_FILE = "index.faiss"
DOCSTORE_FILE = "chunks.jsonl"


def _faiss():
    import faiss

    return faiss


def _as_matrix(vectors) -> np.ndarray:
    m = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    return m.reshape(1, -1) if m.ndim == 1 else m


def write_docs(path: str | Path, docs: Iterable[Document]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "page_content": d.page_content, "metadata": d.metadata},
                               ensure_ascii=False) + "\n")


def read_docs(path: str | Path) -> list[Document]:
    with open(path, encoding="utf-8") as f:
        return [Document(**json.loads(line)) for line in f if line.strip()]


class FaissVectorStore(VectorStore):
    def __init__(self, embedding: Embeddings, dim: int | None = None, *, index=None,
                 docs: Sequence[Document] = ()):
        self._embedding = embedding
        if index is None:
            if dim is None:
                dim = getattr(embedding, "dim", None) or len(embedding.embed_query("dimension probe"))
            index = _faiss().IndexFlatIP(int(dim))
        self.index = index
        self.docs: list[Document] = list(docs)
        if self.index.ntotal != len(self.docs):
            raise ValueError(f"faiss index holds {self.index.ntotal} vectors but {len(self.docs)} documents")
        self._pos = {d.id: i for i, d in enumerate(self.docs)}

    # ------------------------------------------------------------------------------------- writing
    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return len(self.docs)

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        vectors = self._embedding.embed_documents(texts)
        return self.add_embeddings(texts, vectors, metadatas, ids=ids)

    def add_embeddings(self, texts: Sequence[str], vectors, metadatas: Sequence[dict] | None = None, *,
                       ids: Sequence[str | None] | None = None) -> list[str]:
        """Add precomputed (normalised) vectors; an id already present is replaced."""
        texts = list(texts)
        vectors = _as_matrix(vectors) if len(texts) else np.zeros((0, self.dim), np.float32)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        ids = [i or str(uuid.uuid4()) for i in ids] if ids is not None else [str(uuid.uuid4()) for _ in texts]
        if not len(texts) == len(vectors) == len(metadatas) == len(ids):
            raise ValueError("texts, vectors, metadatas and ids must have the same length")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids in one add")
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, the index {self.dim}")
        replaced = [i for i in ids if i in self._pos]
        if replaced:
            self.delete(replaced)
        self.index.add(vectors)
        for text, meta, id_ in zip(texts, metadatas, ids):
            self._pos[id_] = len(self.docs)
            self.docs.append(Document(id=id_, page_content=text, metadata=dict(meta)))
        return list(ids)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        if ids is None:
            self.index.reset()
            self.docs, self._pos = [], {}
            return True
        drop = {self._pos[i] for i in ids if i in self._pos}
        if not drop:
            return False
        keep = [p for p in range(len(self.docs)) if p not in drop]
        vectors = self.vectors_at(keep)
        self.index.reset()
        if keep:
            self.index.add(vectors)
        self.docs = [self.docs[p] for p in keep]
        self._pos = {d.id: i for i, d in enumerate(self.docs)}
        return True

    # ------------------------------------------------------------------------------------- reading
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [self.docs[self._pos[i]] for i in ids if i in self._pos]

    def vectors_at(self, positions: Sequence[int]) -> np.ndarray:
        if not len(positions):
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.index.reconstruct(int(p)) for p in positions]).astype(np.float32)

    def vectors_for(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        have = [i for i in ids if i in self._pos]
        return dict(zip(have, self.vectors_at([self._pos[i] for i in have])))

    def similarity_search_with_score_by_vector(self, embedding, k: int = 4,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        if not self.docs or k <= 0:
            return []
        scores, pos = self.index.search(_as_matrix(embedding), min(k, len(self.docs)))
        return [(self.docs[p], float(s)) for s, p in zip(scores[0], pos[0]) if p >= 0]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k)]

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(self._embedding.embed_query(query), k)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k)]

    def _select_relevance_score_fn(self):
        return lambda cosine: (cosine + 1.0) / 2.0

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, **kwargs: Any) -> list[Document]:
        hits = self.similarity_search_with_score_by_vector(embedding, fetch_k)
        if not hits:
            return []
        vectors = self.vectors_at([self._pos[d.id] for d, _ in hits])
        order = mmr_select([s for _, s in hits], vectors, k, lambda_mult)
        return [hits[i][0] for i in order]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                      lambda_mult: float = 0.5, **kwargs: Any) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(self._embedding.embed_query(query), k, fetch_k,
                                                            lambda_mult)

    # ---------------------------------------------------------------------------------- persistence
    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> FaissVectorStore:
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def save_local(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _faiss().write_index(self.index, str(folder / INDEX_FILE))
        write_docs(folder / DOCSTORE_FILE, self.docs)
        return folder

    @classmethod
    def load_local(cls, folder: str | Path, embedding: Embeddings) -> FaissVectorStore:
        folder = Path(folder)
        for name in (INDEX_FILE, DOCSTORE_FILE):
            if not (folder / name).exists():
                raise FileNotFoundError(f"no {name} in {folder}; run the rag-index stage (dvc repro rag-index)")
        index = _faiss().read_index(str(folder / INDEX_FILE))
        return cls(embedding, index=index, docs=read_docs(folder / DOCSTORE_FILE))
