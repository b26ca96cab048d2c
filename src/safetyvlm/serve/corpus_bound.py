"""Retrieval bound to the hash-checked corpus: only chunks of the knowledge base's own passages can rank.

The index (`data/rag`, or a pgvector / pinecone collection) is a derived copy that can be edited
without touching `kb/corpus.yaml`, whose hash manifest `load_kb` checks. A planted or edited chunk
there would otherwise reach the prompt. `CorpusBoundRetriever` re-chunks the checked corpus with the
index's own chunking settings and keeps a hit only when its chunk id, text, passage id, title and
category are exactly those of a corpus chunk. Untrusted hits are dropped before ranking; the store is
asked for more until `fetch_k` trusted hits are found (or it has no more). So a poisoned index ranks
exactly like the clean one, as long as the corpus itself was not changed.

This lives with the service (and not in `safetyvlm.rag`) because it is a serving check: the
training-time stages index and read the corpus they were given.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from safetyvlm.kb import KnowledgeBase
from safetyvlm.rag.chunking import chunk_passages
from safetyvlm.rag.retrieve import ToolRetriever
from safetyvlm.rag.stores import cosine_hits

log = logging.getLogger(__name__)

# fetch at most this many times `fetch_k` hits per query while looking for trusted ones
MAX_OVERFETCH = 8


def trusted_chunks(kb: KnowledgeBase, chunking: dict) -> dict[str, tuple[str, str, str | None, str]]:
    """chunk id -> (text, passage id, category, title) of every chunk of the corpus, chunked as the index
    was (`chunking`: the index manifest's `chunk_size`, `chunk_overlap`, `title_prefix`)."""
    docs = chunk_passages(kb.corpus, int(chunking["chunk_size"]), int(chunking["chunk_overlap"]),
                          bool(chunking["title_prefix"]))
    return {d.id: (d.page_content, d.metadata["passage_id"], d.metadata["category"], d.metadata["title"])
            for d in docs}


def is_trusted(doc, trusted: dict) -> bool:
    meta = doc.metadata or {}
    cid = meta.get("chunk_id") or doc.id
    want = trusted.get(cid)
    return want is not None and (doc.page_content, meta.get("passage_id"), meta.get("category"),
                                 meta.get("title")) == want


class CorpusBoundRetriever(ToolRetriever):
    """A `ToolRetriever` whose candidate chunks must be chunks of the checked corpus (module docstring)."""

    trusted: dict = {}
    dropped: int = 0  # untrusted hits dropped so far (a poisoned or stale index shows here)

    def _hits(self, qv, fetch_k: int) -> list:
        # ToolRetriever._hits, keeping only corpus chunks and asking the store for more until enough
        n = fetch_k
        while True:
            hits = cosine_hits(self.store, qv, n)
            good = [(d, s) for d, s in hits if is_trusted(d, self.trusted)]
            if len(good) >= fetch_k or len(hits) < n or n >= MAX_OVERFETCH * fetch_k:
                self.dropped += len(hits) - len(good)
                return good[:fetch_k]
            n *= 2


def bind_to_corpus(retriever: ToolRetriever, kb: KnowledgeBase, chunking: dict) -> CorpusBoundRetriever:
    """The same store and settings as `retriever`, with only `kb`'s corpus chunks allowed to rank."""
    return CorpusBoundRetriever(store=retriever.store, embeddings=retriever.embeddings, config=retriever.config,
                                vector_cache=retriever.vector_cache, title_prefix=retriever.title_prefix,
                                trusted=trusted_chunks(kb, chunking))


def untrusted_in(docs: Iterable, trusted: dict) -> int:
    """How many of an index's chunks (e.g. a faiss index's `chunks.jsonl`) are not corpus chunks."""
    return sum(not is_trusted(d, trusted) for d in docs)
