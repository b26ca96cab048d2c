"""Passages for the tools a first pass detected: dense search, then the configured reranking.

`ToolRetriever` is a LangChain `BaseRetriever` (so `.invoke("query")` gives Documents), with two direct
entry points that return `RetrievedPassage`s (passage id, score, text):

* `search(query_or_queries, k, rerank, boost_categories)` — free text;
* `retrieve(query_tools, k, rerank)` — one query per detected tool, boosting those tools' passages.

Pipeline: embed the queries → `fetch_k` chunks per query from the store (cosine) → group chunks by
passage (a passage scores as its best chunk, over all queries) → `boost` adds `category_boost` to the
passages of the detected tools → `mmr` picks `k` passages trading that score against redundancy →
otherwise the top `k` by score. A passage's `text` is its matched chunks merged in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from safetyvlm.rag.config import RetrieveConfig, parse_rerank
from safetyvlm.rag.rerank import boost_scores, mmr_select
from safetyvlm.rag.stores import cosine_hits

GENERAL_QUERY = "general workshop safety: eye protection, gloves, housekeeping, inspecting hand tools"


def tool_query(tool: str) -> str:
    return f"{tool}: how to use a {tool} safely, its hazards, required PPE and common misuses"


@dataclass
class RetrievedPassage:
    id: str                       # the corpus passage id (what answers cite in `sources`)
    score: float                  # cosine of the best chunk, plus the category boost if applied
    text: str
    title: str = ""
    category: str | None = None
    similarity: float = 0.0       # cosine of the best chunk, before any boost
    chunk_ids: list[str] = field(default_factory=list)

    def as_prompt_passage(self) -> dict[str, str]:
        """The `{id, text}` that `safetyvlm.model.prompts.build_messages` takes."""
        return {"id": self.id, "text": self.text}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_document(self) -> Document:
        meta = {k: v for k, v in self.to_dict().items() if k != "text"}
        return Document(id=self.id, page_content=self.text, metadata=meta)


def _merge_chunks(chunks: list[tuple[int, str]], title: str, prefixed: bool) -> str:
    """Chunk texts in index order, overlaps between neighbours removed, gaps marked with an ellipsis."""
    prefix = f"{title}: "
    pieces = []
    for idx, text in sorted(chunks):
        if prefixed and text.startswith(prefix):
            text = text[len(prefix):]
        pieces.append((idx, text))
    out, last = "", None
    for idx, text in pieces:
        if last is None:
            out = text
        elif idx == last + 1:
            overlap = next((n for n in range(min(len(out), len(text)), 0, -1) if out.endswith(text[:n])), 0)
            out += ("" if overlap else " ") + text[overlap:]
        else:
            out += " … " + text
        last = idx
    return f"{prefix}{out}" if prefixed else out


class ToolRetriever(BaseRetriever):
    """Retrieval over any of the three stores; see the module docstring for the pipeline."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any                      # a LangChain VectorStore (FaissVectorStore, PGVector, PineconeVectorStore)
    embeddings: Any                 # the Embeddings the chunks were indexed with
    config: RetrieveConfig = RetrieveConfig()
    vector_cache: Any = None        # {chunk id: vector} for MMR when the store does not return vectors
    title_prefix: bool = True

    # ------------------------------------------------------------------------------ LangChain entry
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [p.to_document() for p in self.search(query)]

    # -------------------------------------------------------------------------------- direct entries
    def retrieve(self, query_tools: Sequence[str], k: int | None = None, rerank=None) -> list[RetrievedPassage]:
        """Passages for the detected tools (category names); general ones when none was detected."""
        tools = list(dict.fromkeys(t for t in query_tools if t))
        queries = [tool_query(t) for t in tools] or [GENERAL_QUERY]
        return self.search(queries, k=k, rerank=rerank, boost_categories=tools)

    def search(self, query: str | Sequence[str], k: int | None = None, rerank=None,
               boost_categories: Sequence[str] = ()) -> list[RetrievedPassage]:
        queries = [query] if isinstance(query, str) else list(query)
        if not queries:
            return []
        return self.search_by_vectors(self.encode_queries(queries), k, rerank, boost_categories)

    def search_by_vectors(self, qvecs, k: int | None = None, rerank=None,
                          boost_categories: Sequence[str] = ()) -> list[RetrievedPassage]:
        """`search` for query vectors already computed (rows of `qvecs`, normalised)."""
        cfg = self.config
        k = cfg.k if k is None else int(k)
        steps = cfg.rerank if rerank is None else parse_rerank(rerank)
        qvecs = np.atleast_2d(np.asarray(qvecs, dtype=np.float32))
        candidates = self._candidates(qvecs, max(cfg.fetch_k, k))
        if not candidates:
            return []
        ids = list(candidates)
        sims = [candidates[i]["similarity"] for i in ids]
        cats = [candidates[i]["category"] for i in ids]
        scores = boost_scores(sims, cats, boost_categories, cfg.category_boost) if "boost" in steps else sims
        if "mmr" in steps:
            vectors = self._vectors([candidates[i]["best_chunk"] for i in ids],
                                    [candidates[i]["best_text"] for i in ids])
            order = mmr_select(scores, vectors, k, cfg.mmr_lambda)
        else:
            order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
        out = []
        for i in order:
            c = candidates[ids[i]]
            out.append(RetrievedPassage(
                id=ids[i], score=float(scores[i]), similarity=float(c["similarity"]),
                text=_merge_chunks(c["chunks"], c["title"], self.title_prefix),
                title=c["title"], category=c["category"], chunk_ids=[cid for _, cid in sorted(c["chunk_ids"])],
            ))
        return out

    # ------------------------------------------------------------------------------------- internals
    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        queries = list(queries)
        if hasattr(self.embeddings, "encode"):
            return np.asarray(self.embeddings.encode(queries), dtype=np.float32)
        return np.asarray([self.embeddings.embed_query(q) for q in queries], dtype=np.float32)

    def _hits(self, qv: np.ndarray, fetch_k: int) -> list:
        """One query's (chunk, cosine) hits; a subclass may filter them (serve/corpus_bound.py)."""
        return cosine_hits(self.store, qv, fetch_k)

    def _candidates(self, qvecs: np.ndarray, fetch_k: int) -> dict[str, dict]:
        passages: dict[str, dict] = {}
        for qv in qvecs:
            for doc, sim in self._hits(qv, fetch_k):
                meta = doc.metadata
                pid = meta.get("passage_id") or doc.id.rsplit("#", 1)[0]
                cid = meta.get("chunk_id") or doc.id
                idx = int(meta.get("chunk_index", 0))
                p = passages.setdefault(pid, {"similarity": -np.inf, "category": meta.get("category"),
                                              "title": meta.get("title", ""), "chunks": [], "chunk_ids": [],
                                              "seen": set()})
                if cid not in p["seen"]:
                    p["seen"].add(cid)
                    p["chunks"].append((idx, doc.page_content))
                    p["chunk_ids"].append((idx, cid))
                if sim > p["similarity"]:
                    p.update(similarity=float(sim), best_chunk=cid, best_text=doc.page_content)
        return passages

    def _vectors(self, chunk_ids: list[str], texts: list[str]) -> np.ndarray:
        found: dict[str, np.ndarray] = {}
        if hasattr(self.store, "vectors_for"):
            found.update(self.store.vectors_for(chunk_ids))
        if self.vector_cache:
            found.update({c: self.vector_cache[c] for c in chunk_ids if c not in found and c in self.vector_cache})
        missing = [i for i, c in enumerate(chunk_ids) if c not in found]
        if missing:
            fresh = self._encode_docs([texts[i] for i in missing])
            found.update({chunk_ids[i]: v for i, v in zip(missing, fresh)})
        return np.stack([found[c] for c in chunk_ids]).astype(np.float32)

    def _encode_docs(self, texts: list[str]) -> np.ndarray:
        if hasattr(self.embeddings, "encode"):
            return np.asarray(self.embeddings.encode(texts), dtype=np.float32)
        return np.asarray(self.embeddings.embed_documents(texts), dtype=np.float32)
