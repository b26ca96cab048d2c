"""RAG core: config, chunking, offline embedding, the faiss store, reranking, retrieval, metrics, the index.

The embedder loads once per session (`embedder`; `load_embeddings` is also cached per process, so the
other test_rag_* modules share it). Indexes are built from a small slice of the real corpus.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from safetyvlm.kb import load_kb
from safetyvlm.rag.chunking import chunk_passages, passage_of
from safetyvlm.rag.config import RagConfig, RetrieveConfig, parse_rerank
from safetyvlm.rag.evaluate import (
    build_query_set,
    evaluate_retriever,
    hit_at_k,
    recall_at_k,
    reciprocal_rank,
    score_rankings,
)
from safetyvlm.rag.faiss_store import FaissVectorStore
from safetyvlm.rag.rerank import boost_scores, mmr_select

ROOT = Path(__file__).resolve().parents[1]
SMALL_TOOLS = ("Drill", "Hammer", "Utility knife", "Handsaw")


class MemoEmbeddings:
    """The real embedder with a per-session memo of chunk vectors: indexes built by several tests
    embed the same chunks once (queries are embedded afresh)."""

    def __init__(self, base):
        self.base, self.dim, self.model_name, self.memo = base, base.dim, base.model_name, {}

    def encode(self, texts):
        missing = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if missing:
            self.memo.update(zip(missing, self.base.encode(missing)))
        return np.stack([self.memo[t] for t in texts]) if texts else self.base.encode([])

    def embed_documents(self, texts):
        return self.encode(list(texts)).tolist()

    def embed_query(self, text):
        return self.base.embed_query(text)


@pytest.fixture(scope="session")
def embedder():
    from safetyvlm.rag.embed import load_embeddings

    return MemoEmbeddings(load_embeddings())


@pytest.fixture(scope="session")
def small_kb():
    """The real KB with its corpus cut to four tools' passages and four general ones."""
    kb = load_kb()
    general = kb.passages_for(None)[:4]
    corpus = [p for p in kb.corpus if p.category in SMALL_TOOLS] + general
    return kb.model_copy(update={"corpus": corpus})


@pytest.fixture(scope="session")
def faiss_index(tmp_path_factory, small_kb, embedder):
    from safetyvlm.rag.index import build_index

    out = tmp_path_factory.mktemp("rag") / "data-rag"
    manifest = build_index(RagConfig(), out, small_kb, embedder)
    return out, manifest


@pytest.fixture()
def retriever(faiss_index, embedder):
    from safetyvlm.rag.index import load_retriever

    return load_retriever(faiss_index[0], RagConfig(), embeddings=embedder)


# ------------------------------------------------------------------------------------------- config


def test_config_maps_params_and_rejects_unknown_keys_and_secrets():
    cfg = RagConfig.from_dict({"vector_store": "pgvector", "chunking": {"chunk_size": 300},
                               "retrieve": {"k": 3, "rerank": "mmr+boost"}})
    assert cfg.vector_store == "pgvector" and cfg.chunking.chunk_size == 300 and cfg.chunking.chunk_overlap == 80
    assert cfg.retrieve.rerank == ("boost", "mmr")  # canonical order: the boost feeds MMR
    assert RagConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        RagConfig.from_dict({"chunking": {"size": 3}})
    with pytest.raises(ValueError, match="PINECONE_API_KEY"):
        RagConfig.from_dict({"pinecone": {"api_key": "pcsk-123"}})
    with pytest.raises(ValueError, match="vector_store"):
        RagConfig.from_dict({"vector_store": "chroma"})
    assert parse_rerank("none") == () and parse_rerank(["boost"]) == ("boost",)
    with pytest.raises(ValueError, match="unknown reranker"):
        parse_rerank("bm25")
    with pytest.raises(ValueError, match="fetch_k"):
        RetrieveConfig(k=10, fetch_k=5)


# ----------------------------------------------------------------------------------------- chunking


def test_chunks_keep_metadata_and_stable_ids(small_kb):
    docs = chunk_passages(small_kb.corpus, chunk_size=200, chunk_overlap=40)
    again = chunk_passages(small_kb.corpus, chunk_size=200, chunk_overlap=40)
    assert [d.id for d in docs] == [d.id for d in again]
    assert len({d.id for d in docs}) == len(docs) > len(small_kb.corpus)
    by_id = {p.id: p for p in small_kb.corpus}
    for d in docs:
        p = by_id[d.metadata["passage_id"]]
        assert d.id == f"{p.id}#{d.metadata['chunk_index']}" == d.metadata["chunk_id"]
        assert passage_of(d.id) == p.id
        assert d.metadata["category"] == p.category and d.metadata["title"] == p.title
        assert d.page_content.startswith(f"{p.title}: ")
        assert len(d.page_content) - len(p.title) - 2 <= 200
    # every word of a passage survives chunking
    first = small_kb.corpus[0]
    pieces = " ".join(d.page_content[len(first.title) + 2:] for d in docs if d.metadata["passage_id"] == first.id)
    assert set(first.text.split()) <= set(pieces.split())
    plain = chunk_passages(small_kb.corpus[:1], 2000, 0, title_prefix=False)
    assert len(plain) == 1 and plain[0].page_content == first.text and plain[0].id == f"{first.id}#0"


# ---------------------------------------------------------------------------------------- embedding


def test_offline_embedding_is_384d_normalised_and_semantic(embedder):
    embedder = embedder.base  # the SentenceTransformerEmbeddings itself, not the test memo
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert embedder.dim == 384 and "all-MiniLM-L6-v2" in embedder.model_name
    v = np.asarray(embedder.embed_documents([
        "Wear safety glasses when drilling.", "Use eye protection while using a power drill.",
        "Store the tape measure in a dry drawer.",
    ]))
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    q = np.asarray(embedder.embed_query("Wear safety glasses when drilling."))
    assert np.allclose(q, v[0], atol=1e-5)


# -------------------------------------------------------------------------------------------- faiss


def test_faiss_store_search_upsert_delete_save_load(tmp_path, embedder):
    texts = ["Drill bits can snag loose gloves.", "Hammer heads fly off loose handles.",
             "Retract the utility knife blade after every cut."]
    metas = [{"passage_id": f"p{i}", "category": c} for i, c in enumerate(["Drill", "Hammer", "Utility knife"])]
    store = FaissVectorStore.from_texts(texts, embedder, metas, ids=["a#0", "b#0", "c#0"])
    hits = store.similarity_search_with_score("my glove got caught by the drill", k=2)
    assert [d.id for d, _ in hits][0] == "a#0" and hits[0][1] > hits[1][1] and -1 <= hits[1][1] <= 1
    assert store.similarity_search("knife blade", k=1)[0].metadata["category"] == "Utility knife"
    store.add_texts(["Hammer heads fly off loose handles; check the wedge."], [metas[1]], ids=["b#0"])
    assert len(store) == 3 and "wedge" in store.get_by_ids(["b#0"])[0].page_content  # upsert, no duplicate
    store.save_local(tmp_path)
    loaded = FaissVectorStore.load_local(tmp_path, embedder)
    q = embedder.embed_query("hammer wedge")
    assert [(d.id, round(s, 5)) for d, s in loaded.similarity_search_with_score_by_vector(q, 3)] == \
           [(d.id, round(s, 5)) for d, s in store.similarity_search_with_score_by_vector(q, 3)]
    assert loaded.delete(["a#0"]) and len(loaded) == 2 and not loaded.get_by_ids(["a#0"])
    assert [d.id for d in loaded.as_retriever(search_kwargs={"k": 1}).invoke("knife")] == ["c#0"]
    with pytest.raises(FileNotFoundError, match="rag-index"):
        FaissVectorStore.load_local(tmp_path / "missing", embedder)


# ---------------------------------------------------------------------------------------- reranking


def test_mmr_prefers_a_diverse_second_pick():
    # 0 and 1 are near-duplicates; 2 is a bit less relevant but different
    v = np.array([[1.0, 0.0, 0.0], [0.995, 0.0998, 0.0], [0.0, 0.0, 1.0]])
    rel = [0.90, 0.89, 0.70]
    assert mmr_select(rel, v, 2, lambda_mult=1.0) == [0, 1]   # relevance only
    assert mmr_select(rel, v, 2, lambda_mult=0.5) == [0, 2]
    assert mmr_select(rel, v, 5, 0.5) == [0, 2, 1] and mmr_select(rel, v, 0) == []


def test_boost_only_lifts_detected_categories():
    assert boost_scores([0.5, 0.6, 0.4], ["Drill", None, "Hammer"], {"Drill", "Hammer"}, 0.15) == \
           pytest.approx([0.65, 0.6, 0.55])


def test_retrieve_ranks_detected_tools_first_and_reports_scores(retriever, small_kb):
    drill = {p.id for p in small_kb.passages_for("Drill")}
    hammer = {p.id for p in small_kb.passages_for("Hammer")}
    # the wording is about cutting: without the boost a knife/saw passage would win
    query = "cutting and sharp edges"
    plain = retriever.search(query, k=4, rerank="none")
    assert not drill & {p.id for p in plain[:1]}
    strong = retriever.model_copy(update={"config": RetrieveConfig(category_boost=0.5)})
    boosted = strong.search(query, k=6, rerank="boost", boost_categories=["Drill"])
    assert boosted[0].id in drill and boosted[0].score == pytest.approx(boosted[0].similarity + 0.5)
    assert plain[0].id in {p.id for p in boosted} and plain[0].score == next(
        p.score for p in boosted if p.id == plain[0].id)  # undetected categories keep their score
    both = retriever.retrieve(["Drill", "Hammer"], k=6, rerank="boost")  # the default boost (0.15)
    assert {p.id for p in both[:4]} <= drill | hammer
    assert all(a.score >= b.score for a, b in zip(both, both[1:]))
    for p in both:
        assert p.id in {q.id for q in small_kb.corpus} and p.chunk_ids and p.text.startswith(p.title)
        assert all(c.startswith(p.id + "#") for c in p.chunk_ids)
    general = retriever.retrieve([], k=3)
    assert all(p.category is None for p in general[:2])


def test_mmr_retrieval_skips_near_duplicates(embedder):
    from safetyvlm.rag.retrieve import ToolRetriever

    texts = {
        "hammer-a": "Hammer safety: wear safety glasses because striking can chip the hammer face.",
        "hammer-b": "Hammer safety: wear safety glasses since striking may chip the face of the hammer.",
        "hammer-c": "Hammer safety: replace a cracked or loose handle before the head flies off.",
    }
    store = FaissVectorStore.from_texts(
        list(texts.values()), embedder,
        [{"passage_id": pid, "chunk_id": f"{pid}#0", "chunk_index": 0, "category": "Hammer", "title": "Hammer"}
         for pid in texts], ids=[f"{pid}#0" for pid in texts])
    r = ToolRetriever(store=store, embeddings=embedder, config=RetrieveConfig(k=2, fetch_k=3, mmr_lambda=0.5),
                      title_prefix=False)
    query = "safety glasses for striking with a hammer"
    plain = [p.id for p in r.search(query, rerank="none")]
    mmr = [p.id for p in r.search(query, rerank="mmr")]
    assert sorted(plain) == ["hammer-a", "hammer-b"]
    assert mmr[0] == plain[0] and mmr[1] == "hammer-c"


def test_langchain_retriever_interface(retriever):
    docs = retriever.invoke("What PPE do I need when using a Drill?")
    assert len(docs) == retriever.config.k and docs[0].metadata["category"] == "Drill"
    assert {"score", "similarity", "chunk_ids"} <= set(docs[0].metadata)


# ------------------------------------------------------------------------------------------ metrics


def test_metrics_on_a_hand_made_set():
    rankings = [["a", "x", "b"], ["x", "y", "c"], ["z", "y", "x"]]
    relevant = [{"a", "b"}, {"c"}, {"q"}]
    assert recall_at_k(rankings[0], relevant[0], 1) == 0.5 and recall_at_k(rankings[0], relevant[0], 3) == 1.0
    assert hit_at_k(rankings[1], relevant[1], 2) == 0.0 and hit_at_k(rankings[1], relevant[1], 3) == 1.0
    assert reciprocal_rank(rankings[1], relevant[1]) == pytest.approx(1 / 3)
    assert reciprocal_rank(rankings[2], relevant[2]) == 0.0
    m = score_rankings(rankings, relevant, ks=(1, 3))
    assert m["recall@1"] == pytest.approx(round(0.5 / 3, 4))
    assert m["recall@3"] == pytest.approx(round(2 / 3, 4))
    assert m["hit@1"] == pytest.approx(round(1 / 3, 4)) and m["hit@3"] == pytest.approx(round(2 / 3, 4))
    assert m["mrr"] == pytest.approx(round((1 + 1 / 3 + 0) / 3, 4))


def test_query_set_covers_every_tool_and_hazard():
    kb = load_kb()
    qs = build_query_set(kb)
    texts = {q.text for q in qs}
    assert "What PPE do I need when using a Drill?" in texts
    for name, entry in kb.tools.items():
        for h in entry.primary_hazards:
            assert f"hazard: {h} of a {name}" in texts
    drill = next(q for q in qs if q.tool == "Drill")
    assert drill.relevant == {p.id for p in kb.passages_for("Drill")}


def test_evaluation_of_the_small_index(retriever, small_kb):
    qs = [q for q in build_query_set(load_kb()) if q.tool in SMALL_TOOLS]
    qs = [q for q in qs if q.kind in ("ppe", "hazard")]
    m = evaluate_retriever(retriever, qs, ks=(1, 5), modes=("none", "boost"))
    assert m["none"]["hit@5"] >= 0.9 and m["none"]["mrr"] >= 0.8
    assert m["boost"]["mrr"] == 1.0  # with the query's tool as the detection, its passage comes first


# -------------------------------------------------------------------------------------------- index


def test_index_layout_and_manifest(faiss_index, small_kb):
    out, manifest = faiss_index
    assert {p.name for p in out.iterdir()} >= {"chunks.jsonl", "vectors.npy", "manifest.json", "index.faiss"}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["vector_store"] == "faiss" and manifest["embedding"]["dim"] == 384
    assert manifest["passages"] == len(small_kb.corpus) and manifest["chunks"] == len(np.load(out / "vectors.npy"))
    assert "key" not in json.dumps(manifest).lower()


def test_load_retriever_refuses_a_store_mismatch(faiss_index, embedder):
    from safetyvlm.rag.index import load_retriever

    with pytest.raises(ValueError, match="rebuild"):
        load_retriever(faiss_index[0], RagConfig(vector_store="pgvector"), embeddings=embedder)


@pytest.mark.slow
def test_stage_script_writes_index_and_metrics(tmp_path):
    params = {"rag": {"vector_store": "faiss", "retrieve": {"k": 5, "fetch_k": 30}, "eval_ks": [1, 5]}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, str(ROOT / "stages/rag_index.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics/detail/rag.json").read_text())
    headline = json.loads((tmp_path / "metrics/rag.json").read_text())  # what `dvc metrics show` lists
    assert headline == {"recall@5": round(metrics["recall@5"], 3), "mrr": round(metrics["mrr"], 3)}
    assert metrics["vector_store"] == "faiss" and metrics["queries"] > 100
    assert metrics["hit@5"] >= 0.95 and metrics["mrr"] >= 0.9
    assert set(metrics["by_rerank"]) == {"none", "mmr", "boost", "boost+mmr"}
    assert (tmp_path / "data/rag/index.faiss").exists()
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no temp dirs left
    assert "recall@5" in run.stdout
