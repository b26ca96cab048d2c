"""The model side of the service: load once, then answer batches of images (no HTTP, no bentoml here).

`Analyzer.analyze` takes one batch as the adaptive batcher formed it. Images that asked for retrieval
go through `answer_with_retrieval` together, the others through one plain pass (`predict_reports`); either
way each answer is read by `read_answer` (always the contract's shape, boxes in that image's own pixels).
Each tool's `score` is the model's probability of the tokens of its name, from the generation's own
log-probabilities.

Two defences sit here, both on by default (`ServeConfig.ground`, `ServeConfig.corpus_bound`):
* grounding: each tool's safety fields and `sources` are the knowledge-base entry of its name
  (`safetyvlm.kb.ground_report`), selected by that name, never copied from the model's text, so text
  written into an image or planted in a passage can at worst change which tools are named;
* a retriever bound to the hash-checked corpus (`corpus_bound.py`): a chunk of the index that is not a
  chunk of `kb/corpus.yaml` never reaches a prompt.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from safetyvlm.answer import answer_with_retrieval, predict_reports, read_answer
from safetyvlm.kb import ground_report, load_kb
from safetyvlm.model.boxes import model_frame
from safetyvlm.model.generate import prompt_texts
from safetyvlm.parse import ParseResult
from safetyvlm.serve.config import ServeConfig
from safetyvlm.serve.package import resolve_model

log = logging.getLogger(__name__)


@dataclass
class Answer:
    report: dict                 # SafetyReport.model_dump(): the output contract
    valid: bool                  # parse_report's strict verdict on the raw text
    errors: list[str]
    raw_text: str
    retrieval: bool              # whether passages were in the prompt
    grounded: bool = False       # whether the safety fields and sources are the knowledge base's
    passage_ids: list[str] = field(default_factory=list)
    batch_size: int = 1          # how many images shared this forward pass
    generate_ms: float = 0.0     # model time of the whole batch

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def attribute_sources(report, passages) -> None:
    """Each tool's `sources`: the ids it cited among the passages in its prompt, else the prompt's passages
    about that tool's category, so every card can point at the guidance the answer had in front of it."""
    ids = {p.id for p in passages}
    for tool in report.tools:
        cited = [s for s in tool.sources if s in ids]
        tool.sources = cited or [p.id for p in passages if p.category == tool.name]


class Analyzer:
    def __init__(self, cfg: ServeConfig):
        import torch

        from safetyvlm.model.loader import load_model

        self.cfg = cfg
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        t0 = time.perf_counter()
        model_dir, bundled_rag, self.model_metadata = resolve_model(cfg.model)
        self.model, self.processor, self.info = load_model(
            model_dir, family=cfg.family, device=cfg.device, dtype=cfg.dtype,
            use_safetensors=True, trust_remote_code=False)
        self.family = self.info["family"]
        self.frame = model_frame(self.family, self.processor)
        # the KB is loaded (and its hash manifest checked) once, at start: a tampered file stops the service
        self.kb = load_kb(verify="require" if cfg.kb_verify else "skip") if (cfg.ground or cfg.corpus_bound) else None
        rag_dir = Path(cfg.rag) if cfg.rag else bundled_rag
        self.retriever = None
        self.untrusted_chunks = None
        if rag_dir is not None:
            self.retriever = self._load_retriever(rag_dir)
        self.rag_dir = str(rag_dir) if rag_dir else None
        self.load_seconds = round(time.perf_counter() - t0, 2)
        log.info("analyzer ready in %.1fs: %s (%s) on %s, retrieval index: %s, grounded: %s", self.load_seconds,
                 model_dir, self.family, self.info["device"], self.rag_dir or "none", cfg.ground)

    def _load_retriever(self, rag_dir: Path):
        from safetyvlm.rag.faiss_store import read_docs
        from safetyvlm.rag.index import CHUNKS_FILE, load_retriever, read_manifest
        from safetyvlm.serve.corpus_bound import bind_to_corpus, untrusted_in

        retriever = load_retriever(rag_dir)
        if not self.cfg.corpus_bound:
            return retriever
        retriever = bind_to_corpus(retriever, self.kb, read_manifest(rag_dir)["chunking"])
        if (rag_dir / CHUNKS_FILE).exists():
            self.untrusted_chunks = untrusted_in(read_docs(rag_dir / CHUNKS_FILE), retriever.trusted)
            if self.untrusted_chunks:
                log.warning("%s: %d chunks are not chunks of the hash-checked corpus; they will never reach a "
                            "prompt (rebuild the index: dvc repro rag-index)", rag_dir, self.untrusted_chunks)
        return retriever

    def input_rejected(self, image: Image.Image) -> Exception | None:
        """The error the model's processor raises on this image alone (e.g. an aspect ratio it refuses), or
        None when it accepts it: tells an input fault (422) from a server fault (500) after a failure."""
        try:
            self.processor(images=[[image]], text=prompt_texts(self.processor, [None]), padding=True,
                           add_special_tokens=False, return_tensors="pt")
        except Exception as e:  # noqa: BLE001 - any refusal by the processor is the image's fault
            return e
        return None

    def describe(self) -> dict:
        return {"model": self.cfg.model, "family": self.family, "device": self.info["device"],
                "dtype": self.info["dtype"], "parameters": self.info["parameters"],
                "retrieval_index": self.rag_dir, "load_seconds": self.load_seconds, "grounded": self.cfg.ground,
                "corpus_bound": self.cfg.corpus_bound and self.retriever is not None,
                "untrusted_chunks": self.untrusted_chunks,
                "tag": self.model_metadata.get("tag"), "git_revision": self.model_metadata.get("git_revision")}

    def _answer(self, result: ParseResult, text: str, max_tools: int, retrieval: bool, passages=()) -> Answer:
        report = result.report
        errors = list(result.errors)
        if len(report.tools) > max_tools:
            errors.append(f"{len(report.tools) - max_tools} tools beyond max_tools={max_tools} dropped")
            report.tools = report.tools[:max_tools]
        if self.cfg.ground:
            report = ground_report(report, self.kb)
        elif retrieval:
            attribute_sources(report, passages)
        return Answer(report=report.model_dump(), valid=result.valid, errors=errors, raw_text=text,
                      retrieval=retrieval, grounded=self.cfg.ground, passage_ids=[p.id for p in passages])

    def analyze(self, images: list[Image.Image], retrieval: list[bool | None], max_tools: list[int | None]
                ) -> list[Answer]:
        t0 = time.perf_counter()
        n = len(images)
        want = [(self.cfg.retrieval_default if r is None else bool(r)) and self.retriever is not None
                for r in retrieval]
        caps = [min(self.cfg.max_tools, m) if m is not None else self.cfg.max_tools for m in max_tools]
        out: list[Answer | None] = [None] * n
        plain = [i for i in range(n) if not want[i]]
        rag = [i for i in range(n) if want[i]]
        kw = dict(max_new_tokens=self.cfg.max_new_tokens, batch_size=max(n, 1), cache=self.cfg.cache)
        if plain:
            answers = predict_reports(self.model, self.processor, self.family, [images[i] for i in plain], **kw)
            for i, (result, text) in zip(plain, answers):
                out[i] = self._answer(result, text, caps[i], False)
        if rag:
            answers = answer_with_retrieval(self.model, self.processor, [images[i] for i in rag],
                                            self.retriever, **kw)
            for i, a in zip(rag, answers):
                result = read_answer(a.text, images[i].size, self.frame, token_logprobs=a.token_logprobs)
                out[i] = self._answer(result, a.text, caps[i], True, a.passages)
        ms = round((time.perf_counter() - t0) * 1000, 1)
        for a in out:
            a.batch_size, a.generate_ms = n, ms
        return out
