"""Put a final model into the BentoML model store, with everything the service needs beside it.

Layout of the stored model (`bentoml models get safetyvlm:TAG`, `path/`):

* `model/` — the checkpoint and its processor (safetensors only; loaded with `load_model`);
* `kb/` — the knowledge base the answers and the index were built from (`tools.yaml`, `corpus.yaml`);
* `rag/` — the retrieval index (only when packaged with one: faiss manifest, chunks, vectors);
* metadata: family, params, metrics, git revision, and the hashes that tie the three together.

`resolve_model` is the other direction: a tag or a directory -> (model dir, index dir or None, info).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from safetyvlm.config import from_section
from safetyvlm.io import atomic_write_json
from safetyvlm.kb import DEFAULT_CORPUS_PATH, DEFAULT_TOOLS_PATH

log = logging.getLogger(__name__)

MODEL_SUBDIR, KB_SUBDIR, RAG_SUBDIR = "model", "kb", "rag"
# Files a served checkpoint may carry; pickled weights (*.bin, *.pt) are left behind on purpose.
_MODEL_FILES = ("*.json", "*.jinja", "*.safetensors", "*.txt", "*.model", "*.tiktoken")


def git_revision(cwd: str | Path = ".") -> str | None:
    """HEAD's commit (with "-dirty" when tracked files changed), or None outside a git checkout."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def _copy_model(src: Path, dst: Path) -> list[str]:
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for pattern in _MODEL_FILES:
        for f in sorted(src.glob(pattern)):
            shutil.copy2(f, dst / f.name)
            copied.append(f.name)
    if not any(n.endswith(".safetensors") for n in copied):
        raise FileNotFoundError(f"{src}: no *.safetensors weights; the service loads safetensors only")
    return sorted(copied)


def _plain(value):
    """BentoML metadata takes basic types only, and no None: drop None entries, stringify odd leaves."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value if v is not None]
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def package_model(model_dir: str | Path, family: str | None = None, rag_dir: str | Path | None = None,
                  params: dict | None = None, metrics: dict | None = None, name: str = "safetyvlm",
                  labels: dict | None = None, repo_dir: str | Path = ".") -> str:
    """Store `model_dir` (+ the KB, + `rag_dir` if given) as a new version of `name`; returns the tag."""
    import bentoml

    from safetyvlm.model.loader import read_family

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json; pass the final model's directory")
    family = read_family(model_dir, family)
    rag_manifest = None
    if rag_dir is not None:
        rag_dir = Path(rag_dir)
        if not (rag_dir / "manifest.json").is_file():
            raise FileNotFoundError(f"{rag_dir}: no manifest.json; build the index first (dvc repro rag-index)")
        rag_manifest = json.loads((rag_dir / "manifest.json").read_text())
        if rag_manifest.get("vector_store") != "faiss":
            # pgvector / pinecone indexes live in a database: the bundle could not be served on its own
            raise ValueError(f"{rag_dir} is a {rag_manifest.get('vector_store')!r} index; only a faiss "
                             f"index can be packaged with the model")
    metadata = {
        "family": family,
        "git_revision": git_revision(repo_dir) or "unknown",
        "params": params or {},
        "metrics": metrics or {},
        "source_model_dir": str(model_dir),
        "rag": None if rag_manifest is None else {
            k: rag_manifest.get(k) for k in ("vector_store", "embedding", "chunking", "corpus_sha256",
                                             "chunks", "passages")},
    }
    with bentoml.models.create(name, labels=labels or {"family": family}, metadata=_plain(metadata),
                               module="safetyvlm.serve") as m:
        root = Path(m.path)
        files = _copy_model(model_dir, root / MODEL_SUBDIR)
        (root / KB_SUBDIR).mkdir()
        shutil.copy2(DEFAULT_TOOLS_PATH, root / KB_SUBDIR / "tools.yaml")
        shutil.copy2(DEFAULT_CORPUS_PATH, root / KB_SUBDIR / "corpus.yaml")
        if rag_dir is not None:
            shutil.copytree(rag_dir, root / RAG_SUBDIR)
        log.info("packaged %s (%s): %s", m.tag, family, ", ".join(files))
    return str(m.tag)


def resolve_model(ref: str) -> tuple[Path, Path | None, dict]:
    """A model directory or a BentoML model tag -> (checkpoint dir, bundled index dir or None, metadata)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        # a packaged layout copied out of the store, or a bare checkpoint
        if (path / MODEL_SUBDIR / "config.json").is_file():
            rag = path / RAG_SUBDIR
            return path / MODEL_SUBDIR, (rag if rag.is_dir() else None), {}
        return path, None, {}
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        m = bentoml.models.get(ref)
    except (NotFound, ValueError) as e:
        raise FileNotFoundError(
            f"model {ref!r} is neither a directory nor a tag in the BentoML model store "
            f"({type(e).__name__}: {e}). Package one (`python stages/package.py`) or set "
            f"SAFETYVLM_MODEL to a checkpoint directory, e.g. models/shipped/qwen2_5_vl-tiny") from None
    root = Path(m.path)
    rag = root / RAG_SUBDIR
    return root / MODEL_SUBDIR, (rag if rag.is_dir() else None), {"tag": str(m.tag), **dict(m.info.metadata)}


@dataclass
class PackageConfig:
    family: str = "qwen2_5_vl"
    model_dir: str = "models/final/{family}/merged"   # `{family}` is filled in
    include_rag: bool = True
    rag_dir: str = "data/rag"
    name: str = "safetyvlm"
    metrics: str = "metrics/detail/eval.json"                 # stored as metadata when present

    @classmethod
    def from_dict(cls, d: dict | None) -> PackageConfig:
        return from_section(cls, d or {}, "package")


def run_package(cfg: PackageConfig, params: dict | None = None, record_path: str | Path = "models/package/record.json",
                repo_dir: str | Path = ".") -> dict:
    """The package stage: store the final model and write a small record (tag, hashes) atomically."""
    model_dir = Path(cfg.model_dir.format(family=cfg.family))
    metrics_path = Path(cfg.metrics)
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    tag = package_model(model_dir, cfg.family, cfg.rag_dir if cfg.include_rag else None, params=params or {},
                        metrics=metrics, name=cfg.name, repo_dir=repo_dir)
    import bentoml

    m = bentoml.models.get(tag)
    record = {"tag": tag, "family": cfg.family, "model_dir": str(model_dir),
              "rag_dir": cfg.rag_dir if cfg.include_rag else None,
              "git_revision": m.info.metadata.get("git_revision"),
              "metrics_file": str(metrics_path) if metrics else None,
              # relative when the store is inside the project (.bentoml), so the record reads the same anywhere
              "store_path": os.path.relpath(m.path) if Path(m.path).resolve().is_relative_to(Path.cwd())
              else str(m.path),
              "files": sorted(str(p.relative_to(m.path)) for p in Path(m.path).rglob("*") if p.is_file())}
    atomic_write_json(record_path, record)
    return record
