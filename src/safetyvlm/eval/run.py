"""The eval stage: every condition (model × retrieval) of every family on one split, then the report.

A condition is `{name, model, retrieval}`; `model` may hold `{family}` (params.yaml `eval.conditions`),
so a user adds a row by adding an entry. Answers are generated in batches for the metrics; latency is
timed separately, one image at a time (batch 1, as a user's request), on the first `latency_images` of the
main split (a shifted row is the same model answering the same way: its latency is not timed again).
A retrieval condition answers in two passes (`answer_with_retrieval`); its first pass is the same
greedy answer as the plain condition of the same model, so that answer is reused when present.

The metrics score the safety text the model wrote. A condition with `ground: true` scores what the
service returns by default instead (`serve.ground`): each tool's safety fields are the knowledge
base's entry for its name. It reuses the answers of an earlier condition with the same model and
retrieval (same texts, latency and detection), so a grounded row costs no generation. Two model
directories with byte-identical weights (a preference stage that kept no pair copies the finetune) count
as one model: the second one's rows score the first one's answers.
"""

from __future__ import annotations

import filecmp
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from safetyvlm.answer.retrieval import answer_with_retrieval
from safetyvlm.config import from_section
from safetyvlm.data.dataset import load_dataset_dir
from safetyvlm.eval.evaluate import evaluate_answers
from safetyvlm.eval.hallucination import ClaimChecker
from safetyvlm.eval.judge import LocalJudge, OpenAIJudge
from safetyvlm.eval.report import SHIFTED_SUFFIX
from safetyvlm.kb import load_kb
from safetyvlm.model.boxes import model_frame
from safetyvlm.model.generate import check_cache, generate_reports, generate_scored
from safetyvlm.model.presets import BASE_RECORD, base_model_path

log = logging.getLogger("safetyvlm.eval")


def _default_conditions() -> list[dict]:
    return [
        {"name": "zero-shot", "model": "models/base/{family}", "retrieval": False},
        {"name": "ft vision", "model": "models/finetune/{family}-vision/merged", "retrieval": False},
        {"name": "ft language", "model": "models/finetune/{family}-language/merged", "retrieval": False},
        {"name": "ft vision+language", "model": "models/finetune/{family}-vision_language/merged",
         "retrieval": False},
        {"name": "ft vision+language + RAG", "model": "models/finetune/{family}-vision_language/merged",
         "retrieval": True},
        {"name": "preference-trained", "model": "models/final/{family}/merged", "retrieval": False},
        {"name": "preference-trained grounded", "model": "models/final/{family}/merged", "retrieval": False,
         "ground": True},
    ]


@dataclass
class Condition:
    name: str
    model: str
    retrieval: bool = False
    ground: bool = False  # safety fields from the KB entry of each tool's name, as the service returns them

    def model_dir(self, family: str) -> str:
        path = self.model.format(family=family)
        # a base dir may only record a checkpoint stored elsewhere (a hub id or a local path)
        return base_model_path(path) if Path(path, BASE_RECORD).exists() else path


@dataclass
class EvalConfig:
    families: list[str] = field(default_factory=lambda: ["qwen2_5_vl", "mllama"])
    split: str = "test"
    images: int | None = 200          # None: the whole split
    batch_size: int = 100
    max_new_tokens: int = 400
    # the KV cache of the batched answers (model/generate.py): static is preallocated, dynamic grows by a
    # copy every token, which costs Qwen more as the batch grows; the same tokens either way. On 2 CPU cores
    # batch 100 took ~0.65x batch 25's time, static ~0.85x dynamic's for Qwen, ~1.05x for Mllama
    # (benchmarks/results/generation_cpu.json)
    cache: str = "static"
    latency_images: int = 4            # timed one at a time (batch 1) for p50/p95
    iou_threshold: float = 0.5
    claim_threshold: float = 0.55     # MiniLM cosine for a claim to count as supported (hallucination.py)
    judge: str = "local"              # local | openai
    openai: dict = field(default_factory=lambda: {"model": "gpt-4o-mini", "base_url": None,
                                                   "api_key_env": "OPENAI_API_KEY", "cache_dir": None})
    conditions: list[dict] = field(default_factory=_default_conditions)
    # The shifted test set (dataset.shifted): `conditions` (names above) again on `images` of `split`,
    # each as the row "<name> · shifted"; {} or images 0: none. Every finetune strategy is there: whichever
    # scores best is held to the shifted targets too (eval/docs.py).
    shifted: dict = field(default_factory=lambda: {
        "split": "test_shifted", "images": 100,
        "conditions": ["zero-shot", "ft vision", "ft language", "ft vision+language", "preference-trained"]})

    def __post_init__(self):
        if self.judge not in ("local", "openai"):
            raise ValueError(f"eval.judge must be local or openai, got {self.judge!r}")
        check_cache(self.cache, "eval.cache")
        self.conditions = [c if isinstance(c, Condition) else from_section(Condition, c, "eval.conditions[]")
                           for c in self.conditions]
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError(f"eval.conditions: duplicate names in {names}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "EvalConfig":
        return from_section(cls, dict(d or {}), "eval")


def make_judge(cfg: EvalConfig, claims):
    if cfg.judge == "openai":
        return OpenAIJudge(**{k: v for k, v in cfg.openai.items() if v is not None})  # None: the judge's default
    return LocalJudge(claims=claims)


def timed_answers(model, processor, images, *, retriever=None, max_new_tokens: int = 400) -> list[float]:
    """Seconds per image, one image per call (with retrieval: both passes and the retrieval)."""
    out = []
    for image in images:
        start = time.perf_counter()
        if retriever is not None:
            answer_with_retrieval(model, processor, [image], retriever, max_new_tokens=max_new_tokens, batch_size=1)
        else:
            generate_reports(model, processor, [image], max_new_tokens=max_new_tokens, batch_size=1)
        out.append(time.perf_counter() - start)
    return out


@dataclass
class Answers:
    """What one model said about the rows, with its timings; the frame its boxes are in."""

    texts: list[str]
    token_logprobs: list[list]
    plain: list[str]                  # the first pass with retrieval, else the texts themselves
    latencies: list[float] | None     # None: not timed (a shifted row)
    batch_seconds: float
    frame: object


def generate_answers(model_dir: str, family: str, rows, cfg: EvalConfig, *, retriever=None,
                     first_pass: Sequence[str] | None = None, timed: bool = True) -> Answers:
    from safetyvlm.model.loader import load_model

    model, processor, _ = load_model(model_dir, family=family, dtype="float32")
    images = [r["image"] for r in rows]
    start = time.perf_counter()
    if retriever is not None:
        answers = answer_with_retrieval(model, processor, images, retriever, max_new_tokens=cfg.max_new_tokens,
                                        batch_size=cfg.batch_size, first_pass=first_pass, cache=cfg.cache)
        plain = [a.first_pass_text for a in answers]
    else:
        answers = generate_scored(model, processor, images, max_new_tokens=cfg.max_new_tokens,
                                  batch_size=cfg.batch_size, cache=cfg.cache)
        plain = [a.text for a in answers]
    batch_seconds = time.perf_counter() - start
    latencies = timed_answers(model, processor, images[: cfg.latency_images], retriever=retriever,
                              max_new_tokens=cfg.max_new_tokens) if timed else None
    return Answers([a.text for a in answers], [a.token_logprobs for a in answers], plain, latencies,
                   batch_seconds, model_frame(family, processor))


def evaluate_model(model_dir: str, family: str, rows, cfg: EvalConfig, *, retriever=None, judge=None,
                   claims=None, kb=None, first_pass: Sequence[str] | None = None, ground: bool = False,
                   answers: Answers | None = None, timed: bool = True) -> tuple[dict, Answers]:
    """(metrics, answers) of one model on `rows`, with retrieval when `retriever` is given.

    `answers`: what this model already said with this retrieval (another condition's), scored again
    rather than generated again. `ground`: safety fields from the KB entry of each tool's name.
    `timed`: whether latency is timed (no latency figures otherwise).
    """
    if answers is None:
        answers = generate_answers(model_dir, family, rows, cfg, retriever=retriever, first_pass=first_pass,
                                   timed=timed)
    sizes = [tuple(r["image"].size) for r in rows]
    metrics = evaluate_answers(
        answers.texts, [r["instances"] for r in rows], sizes, answers.frame, token_logprobs=answers.token_logprobs,
        judge=judge, claims=claims, kb=kb, latencies=answers.latencies, iou_threshold=cfg.iou_threshold,
        ground=ground)
    metrics["batch_seconds_per_image"] = answers.batch_seconds / max(1, len(rows))
    metrics["model"] = str(model_dir)
    metrics["retrieval"] = retriever is not None
    metrics["grounded"] = ground
    metrics["example_answer"] = answers.texts[0][:400] if answers.texts else ""
    return metrics, answers


def same_weights(a: str | Path, b: str | Path) -> bool:
    """Whether two model directories hold byte-identical weight files (`*.safetensors`, `*.bin`) under the
    same names. Sizes first, so different models are told apart without reading them."""
    def weights(d: Path) -> dict[str, Path]:
        return {p.relative_to(d).as_posix(): p for p in sorted(d.rglob("*")) if p.suffix in (".safetensors", ".bin")}

    wa, wb = weights(Path(a)), weights(Path(b))
    if not wa or wa.keys() != wb.keys() or any(wa[k].stat().st_size != wb[k].stat().st_size for k in wa):
        return False
    return all(filecmp.cmp(wa[k], wb[k], shallow=False) for k in wa)


def run_eval(cfg: EvalConfig, dataset_dir: str | Path = "data/dataset", rag_dir: str | Path = "data/rag",
             rag_cfg=None) -> dict:
    """`{family: {condition: metrics}}` for every family and condition of `cfg`."""
    dd = load_dataset_dir(dataset_dir)
    split = dd[cfg.split]
    rows = split.select(range(len(split) if cfg.images is None else min(cfg.images, len(split))))
    runs = [(cond, cond.name, rows, cfg.split) for cond in cfg.conditions]
    if cfg.shifted.get("images"):
        name = cfg.shifted.get("split", "test_shifted")
        if name not in dd:
            raise ValueError(f"eval.shifted: the dataset has no split {name!r} (set dataset.shifted.size)")
        wanted = cfg.shifted.get("conditions") or [c.name for c in cfg.conditions]
        unknown = sorted(set(wanted) - {c.name for c in cfg.conditions})
        if unknown:
            raise ValueError(f"eval.shifted.conditions: {unknown} are not eval.conditions names")
        shifted = dd[name].select(range(min(int(cfg.shifted["images"]), len(dd[name]))))
        runs += [(c, c.name + SHIFTED_SUFFIX, shifted, name) for c in cfg.conditions if c.name in wanted]
    kb = load_kb()
    claims = ClaimChecker(kb, threshold=cfg.claim_threshold)
    judge = make_judge(cfg, claims)
    retriever = None
    if any(c.retrieval for c in cfg.conditions):
        from safetyvlm.rag.index import load_retriever  # LangChain and the embedder: only with retrieval

        retriever = load_retriever(rag_dir, rag_cfg)
    results: dict[str, dict] = {}
    for family in cfg.families:
        results[family] = {}
        plain_answers: dict[tuple[str, str], list[str]] = {}  # (model, split) -> plain answers
        said: dict[tuple[str, bool, str], Answers] = {}  # (model, retrieval, split) -> answers, for grounded rows
        canonical: dict[str, str] = {}  # model dir -> the first dir seen with the same weights
        for cond, row_name, row_set, split_name in runs:
            model_dir = cond.model_dir(family)
            if model_dir not in canonical:
                canonical[model_dir] = next(
                    (d for d in dict.fromkeys(canonical.values())
                     if Path(d).is_dir() and Path(model_dir).is_dir() and same_weights(d, model_dir)), model_dir)
                if canonical[model_dir] != model_dir:
                    log.info("%s has the same weights as %s: its answers are reused", model_dir, canonical[model_dir])
            answered_by = canonical[model_dir]
            log.info("%s / %s: %s%s%s on %d %s images", family, row_name, model_dir,
                     " + retrieval" if cond.retrieval else "", ", grounded" if cond.ground else "", len(row_set),
                     split_name)
            metrics, answers = evaluate_model(
                model_dir, family, row_set, cfg, retriever=retriever if cond.retrieval else None, judge=judge,
                claims=claims, kb=kb,
                first_pass=plain_answers.get((answered_by, split_name)) if cond.retrieval else None,
                ground=cond.ground, answers=said.get((answered_by, cond.retrieval, split_name)),
                timed=split_name == cfg.split)
            plain_answers.setdefault((answered_by, split_name), answers.plain)
            said.setdefault((answered_by, cond.retrieval, split_name), answers)
            metrics["split"] = split_name
            metrics["answered_by"] = answered_by  # the model dir whose answers these are (same weights)
            results[family][row_name] = metrics
            log.info("%s / %s: F1 %.3f, JSON valid %.3f, overall %.2f", family, row_name, metrics["f1"],
                     metrics["json_valid"], metrics["overall"] or 0.0)
    return results
