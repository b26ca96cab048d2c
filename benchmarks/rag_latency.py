"""Retrieval latency, top-5 over 10k chunks, for faiss and pgvector (p50 / p99 in milliseconds).

    python benchmarks/rag_latency.py                          # 10k chunks, faiss + pgvector
    python benchmarks/rag_latency.py --stores faiss --chunks 50000 --queries 2000

The chunks are synthetic texts made by varying the corpus passages (a window of 2-3 sentences, the tool
name swapped for another category, ~10% of words dropped), embedded with the real embedder, so the
vectors have the corpus's distribution. Queries are the labelled KB questions, embedded up front.

Timed, each over the same query vectors (a query vector is given; embedding it is reported separately):
  faiss    FaissVectorStore.similarity_search_with_score_by_vector (LangChain interface) and raw index.search
  retriever ToolRetriever.search_by_vectors on faiss (fetch_k=30, boost + MMR, passages out)
  pgvector PGVector.similarity_search_with_score_by_vector on an embedded PostgreSQL (HNSW index and exact
           scan), plus the bare SQL query through psycopg
  embed    one query through the embedder (what a live request adds before any search)
  answer   with --answer-model: one end-to-end retrieval-augmented answer per image (first pass, retrieval
           of the detected tools' passages incl. query embedding, second pass), batch 1, and the share
           of the whole that retrieval takes
The goal is p50 <= 2 ms for faiss.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from safetyvlm.kb import load_kb
from safetyvlm.schema import CATEGORIES


def synthetic_chunks(n: int, seed: int = 0) -> list[dict]:
    kb = load_kb()
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = kb.corpus[i % len(kb.corpus)]
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", p.text) if s]
        width = min(len(sentences), rng.choice((2, 3)))
        start = rng.randrange(len(sentences) - width + 1)
        text = " ".join(sentences[start:start + width])
        category = p.category
        if category and rng.random() < 0.5:
            category = rng.choice(CATEGORIES)
            text = text.replace(p.category, category)
        words = [w for w in text.split() if rng.random() > 0.1]
        out.append({"id": f"{p.id}-v{i}#0", "text": f"{p.title}: " + " ".join(words),
                    "metadata": {"passage_id": f"{p.id}-v{i}", "chunk_id": f"{p.id}-v{i}#0", "chunk_index": 0,
                                 "category": category, "title": p.title}})
    return out


def timed(fn, args_list, warmup: int = 20) -> list[float]:
    for a in args_list[:warmup]:
        fn(a)
    times = []
    for a in args_list:
        t0 = time.perf_counter()
        fn(a)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def report(name: str, ms: list[float]) -> dict:
    ms = sorted(ms)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    print(f"{name:<44} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms   (n={len(ms)})")
    return {"name": name, "p50_ms": round(p50, 4), "p99_ms": round(p99, 4), "n": len(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=1000, help="timed searches per store")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--stores", default="faiss,pgvector")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faiss-threads", type=int, default=1,
                    help="OpenMP threads for faiss (1: a single query on a flat index gains nothing from more)")
    ap.add_argument("--vectors-cache", type=Path, default=None,
                    help="an .npy file to keep the chunk vectors in between runs (embedding 10k texts takes a while)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    ap.add_argument("--answer-model", type=Path, default=None,
                    help="a model dir (e.g. models/finetune/qwen2_5_vl-vision_language/merged): also time "
                         "end-to-end answers with retrieval from data/rag and print retrieval's share")
    ap.add_argument("--answer-images", type=int, default=10)
    args = ap.parse_args()
    stores = {s.strip() for s in args.stores.split(",") if s.strip()}

    from safetyvlm.rag.embed import load_embeddings
    from safetyvlm.rag.evaluate import build_query_set

    emb = load_embeddings()
    chunks = synthetic_chunks(args.chunks, args.seed)
    texts = [c["text"] for c in chunks]
    t0 = time.perf_counter()
    if args.vectors_cache and args.vectors_cache.exists() and len(np.load(args.vectors_cache)) == len(texts):
        vectors = np.load(args.vectors_cache)
        how = f"loaded from {args.vectors_cache}"
    else:
        vectors = emb.encode(texts)
        how = f"embedded in {time.perf_counter() - t0:.1f} s"
        if args.vectors_cache:
            np.save(args.vectors_cache, vectors)
    print(f"{len(chunks)} synthetic chunks, {len(set(texts))} distinct texts, {vectors.shape[1]}-d ({how})")
    query_texts = [q.text for q in build_query_set(load_kb())]
    qvecs = emb.encode(query_texts)
    queries = [qvecs[i % len(qvecs)] for i in range(args.queries)]
    results = [report("embed one query (MiniLM, CPU)", timed(emb.encode_query, query_texts[:100], warmup=5))]

    if "faiss" in stores:
        import faiss

        from safetyvlm.rag.config import RetrieveConfig
        from safetyvlm.rag.faiss_store import FaissVectorStore
        from safetyvlm.rag.retrieve import ToolRetriever

        faiss.omp_set_num_threads(args.faiss_threads)
        store = FaissVectorStore(emb, vectors.shape[1])
        store.add_embeddings(texts, vectors, [c["metadata"] for c in chunks], ids=[c["id"] for c in chunks])
        results.append(report(f"faiss: store search top-{args.k} (LangChain)",
                              timed(lambda q: store.similarity_search_with_score_by_vector(q, args.k), queries)))
        results.append(report(f"faiss: raw index.search top-{args.k}",
                              timed(lambda q: store.index.search(q.reshape(1, -1), args.k), queries)))
        retriever = ToolRetriever(store=store, embeddings=emb, config=RetrieveConfig(k=args.k, fetch_k=30))
        results.append(report(f"faiss: retriever top-{args.k} (fetch 30, boost+mmr)",
                              timed(lambda q: retriever.search_by_vectors(q, boost_categories=["Drill"]), queries)))

    if "pgvector" in stores:
        results += bench_pgvector(chunks, texts, vectors, queries, emb, args.k)
    if args.answer_model:
        results += bench_answer(args.answer_model, args.answer_images, emb)
    if args.json:
        args.json.write_text(json.dumps({"chunks": len(chunks), "k": args.k, "results": results}, indent=2) + "\n")
    return results


def bench_answer(model_dir: Path, n: int, emb) -> list[dict]:
    """End-to-end retrieval-augmented answers (batch 1) on rendered test scenes, split into their parts."""
    import yaml

    from safetyvlm.answer import detected_tools
    from safetyvlm.data.render import RenderConfig, render_scene
    from safetyvlm.model.generate import generate_reports
    from safetyvlm.model.loader import load_model
    from safetyvlm.rag.config import RagConfig
    from safetyvlm.rag.index import load_retriever

    params = yaml.safe_load(open("params.yaml"))
    max_new = params["eval"]["max_new_tokens"]
    model, processor, _ = load_model(model_dir, dtype="float32")
    retriever = load_retriever("data/rag", RagConfig.from_dict(params["rag"]), embeddings=emb)
    images = [render_scene(10_000 + i, RenderConfig())[0] for i in range(n + 1)]
    parts = {"first pass": [], "retrieval": [], "second pass": [], "total": []}
    for i, image in enumerate(images):
        t0 = time.perf_counter()
        first = generate_reports(model, processor, [image], max_new_tokens=max_new, batch_size=1)
        t1 = time.perf_counter()
        passages = retriever.retrieve(detected_tools(first[0]))
        t2 = time.perf_counter()
        generate_reports(model, processor, [image], max_new_tokens=max_new, batch_size=1,
                         passages=[[p.as_prompt_passage() for p in passages]])
        t3 = time.perf_counter()
        if i == 0:
            continue  # warm-up
        for name, ms in zip(parts, ((t1 - t0), (t2 - t1), (t3 - t2), (t3 - t0))):
            parts[name].append(ms * 1000)
    out = [report(f"answer with retrieval: {name}", ms) for name, ms in parts.items()]
    share = statistics.median(parts["retrieval"]) / statistics.median(parts["total"])
    print(f"retrieval's share of an end-to-end answer (p50/p50): {share:.2%}  ({model_dir})")
    out.append({"name": "retrieval share of answer", "share_p50": round(share, 5), "model": str(model_dir)})
    return out


def bench_pgvector(chunks, texts, vectors, queries, emb, k) -> list[dict]:
    import psycopg

    from safetyvlm.rag.config import PgvectorConfig
    from safetyvlm.rag.stores import (
        embedded_postgres_url,
        open_pgvector,
        prepare_pgvector_search,
        stop_embedded_postgres,
    )

    out = []
    data_dir = Path(tempfile.mkdtemp(prefix="rag-latency-pg-")) / "data"
    try:
        url = embedded_postgres_url(data_dir)
        store = open_pgvector(PgvectorConfig(data_dir=str(data_dir), collection="bench"), emb, vectors.shape[1],
                              pre_delete_collection=True)
        t0 = time.perf_counter()
        for s in range(0, len(texts), 2000):
            store.add_embeddings(texts[s:s + 2000], vectors[s:s + 2000].tolist(),
                                 [{k_: v for k_, v in c["metadata"].items() if v is not None}
                                  for c in chunks[s:s + 2000]], ids=[c["id"] for c in chunks[s:s + 2000]])
        print(f"pgvector: {len(texts)} rows inserted in {time.perf_counter() - t0:.1f} s")
        sql = ("SELECT id, embedding <=> %s::vector AS d FROM langchain_pg_embedding "
               "ORDER BY d LIMIT %s")
        as_text = [("[" + ",".join(f"{x:.7g}" for x in q) + "]") for q in queries]
        conn = psycopg.connect(url.replace("postgresql://postgres:@/", "postgresql://postgres@/"), autocommit=True)

        def run_all(label):
            out.append(report(f"pgvector ({label}): PGVector top-{k}",
                              timed(lambda q: store.similarity_search_with_score_by_vector(q.tolist(), k), queries)))
            out.append(report(f"pgvector ({label}): bare SQL top-{k}",
                              timed(lambda q: conn.execute(sql, (q, k)).fetchall(), as_text)))

        prepare_pgvector_search(store, hnsw=False)  # ANALYZE only
        run_all("exact scan")
        t0 = time.perf_counter()
        prepare_pgvector_search(store, hnsw=True)
        print(f"pgvector: HNSW index built in {time.perf_counter() - t0:.1f} s")
        run_all("HNSW")
        plan = conn.execute("EXPLAIN " + sql, (as_text[0], k)).fetchall()
        print("pgvector: bare SQL plan uses", "the HNSW index" if "hnsw" in str(plan) else "a scan")
        conn.close()
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    return out


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
