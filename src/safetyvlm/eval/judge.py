"""Judges: score each answer 0-10 on five dimensions against the reference (truth + knowledge base).

Dimensions (`DIMENSIONS`): tool identification, primary function, safety considerations, common
misuses, structured-output compliance. **Overall** = mean of the five. A judge sees, per image, the
raw answer text and the reference: the ground-truth tools (name, box in pixels) with the
knowledge-base entry of each.

**Instruction Accuracy** (judge-independent, `instruction_followed`) = share of answers that
(a) are strictly valid JSON of the contract (`parse_report(...).valid`), (b) are complete (every
tool has all four safety fields non-empty) and (c) name exactly the ground-truth tools, as a
multiset (two hammers in the image need two Hammer entries). Boxes do not enter it.

Two judges:

* `LocalJudge` (default): deterministic and offline, built from the measures of this package.
* `OpenAIJudge`: any OpenAI-compatible chat-completions endpoint, temperature 0, JSON mode, answers
  validated with pydantic, cached on disk, retried with exponential backoff. A judgment that still
  fails (transport error, malformed JSON, scores out of range) is **counted and excluded** from the
  means, never scored as 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safetyvlm.eval.compliance import answer_complete, tool_complete
from safetyvlm.eval.detection import _prf, match_image
from safetyvlm.parse import ParseResult

log = logging.getLogger(__name__)

DIMENSIONS = (
    "tool_identification",
    "primary_function",
    "safety_considerations",
    "common_misuses",
    "structured_output",
)
DIMENSION_LABELS = {
    "tool_identification": "Tool identification",
    "primary_function": "Primary function",
    "safety_considerations": "Safety considerations",
    "common_misuses": "Common misuses",
    "structured_output": "Structured output",
}


@dataclass
class JudgeCase:
    """One answer with its reference. Boxes of `predicted` and `truths` are original-image pixels."""

    text: str
    parsed: ParseResult
    predicted: list[dict]  # {name, bbox_2d, primary_function, required_ppe, ...} per kept tool
    truths: list[dict]  # {name, bbox_2d}
    reference: dict[str, dict]  # tool name -> KB safety fields, for every ground-truth name
    image_size: tuple[int, int] | None = None


class Judgment(BaseModel):
    """Scores of one answer; also the pydantic model an LLM judge's JSON must satisfy."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    tool_identification: float = Field(ge=0, le=10)
    primary_function: float = Field(ge=0, le=10)
    safety_considerations: float = Field(ge=0, le=10)
    common_misuses: float = Field(ge=0, le=10)
    structured_output: float = Field(ge=0, le=10)
    rationale: str = ""

    @property
    def overall(self) -> float:
        return sum(getattr(self, d) for d in DIMENSIONS) / len(DIMENSIONS)


def instruction_followed(parsed: ParseResult, truths: Sequence[dict]) -> bool:
    """Valid JSON, complete, and exactly the ground-truth tool names (as a multiset)."""
    names = Counter(t.name for t in parsed.report.tools)
    return parsed.valid and answer_complete(parsed) and names == Counter(t["name"] for t in truths)


def summarize_judgments(judgments: Sequence[Judgment | None], cases: Sequence[JudgeCase],
                        judge_name: str = "") -> dict:
    """Means over the judged answers; failed (None) judgments are counted and left out."""
    ok = [j for j in judgments if j is not None]
    out: dict = {"judge": judge_name}
    for d in DIMENSIONS:
        out[d] = sum(getattr(j, d) for j in ok) / len(ok) if ok else None
    out["overall"] = sum(j.overall for j in ok) / len(ok) if ok else None
    out["instruction_accuracy"] = (
        sum(instruction_followed(c.parsed, c.truths) for c in cases) / len(cases) if cases else 0.0
    )
    out["judged"] = len(ok)
    out["failed"] = len(judgments) - len(ok)
    return out


def run_judge(judge, cases: Sequence[JudgeCase]) -> dict:
    """Judge every case; returns the summary plus the per-answer judgments (None = failed)."""
    judgments = [judge.judge(c) for c in cases]
    summary = summarize_judgments(judgments, cases, getattr(judge, "name", type(judge).__name__))
    summary["per_answer"] = [j.model_dump() if j is not None else None for j in judgments]
    return summary


# ------------------------------------------------------------------------------------ local judge

_STOP = frozenset(
    "a an and the of to for in on at by with or from into as is are be it its this that when while "
    "not no any use using used".split()
)


def _words(text: str) -> set[str]:
    return {w for w in re.sub(r"[^a-z0-9]+", " ", str(text).lower()).split() if w not in _STOP}


def lexical_similarity(a: Sequence[str], b: Sequence[str]):
    """Dice coefficient of content-word sets, for every pair: a (len(a), len(b)) nested list."""
    wa, wb = [_words(x) for x in a], [_words(x) for x in b]
    return [[2 * len(x & y) / (len(x) + len(y)) if x or y else 1.0 for y in wb] for x in wa]


def item_f1(pred: Sequence[str], ref: Sequence[str], sim: Callable, threshold: float) -> float:
    """F1 of one-to-one matched items: pairs with similarity >= threshold, greedy by similarity."""
    pred = [p for p in pred if str(p).strip()]
    ref = [r for r in ref if str(r).strip()]
    if not pred and not ref:
        return 1.0
    if not pred or not ref:
        return 0.0
    m = sim(pred, ref)
    cand = sorted(((float(m[i][j]), i, j) for i in range(len(pred)) for j in range(len(ref))
                   if m[i][j] >= threshold), reverse=True)
    used_p, used_r = set(), set()
    for _, i, j in cand:
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
    return 2 * len(used_p) / (len(pred) + len(ref))


def pair_tools(predicted: Sequence[dict], truths: Sequence[dict]) -> tuple[list[tuple[int, int]], int, int]:
    """One-to-one (pred, truth) pairs: class-aware IoU>=0.5 matches first, then the same name
    regardless of box. Returns (pairs, unpaired predictions, unpaired truths)."""
    pairs = [(i, j) for i, j, _ in match_image(list(predicted), list(truths), 0.5)]
    used_p, used_t = {i for i, _ in pairs}, {j for _, j in pairs}
    for i, p in enumerate(predicted):
        if i in used_p:
            continue
        for j, t in enumerate(truths):
            if j not in used_t and t["name"] == p["name"]:
                pairs.append((i, j))
                used_p.add(i)
                used_t.add(j)
                break
    return pairs, len(predicted) - len(pairs), len(truths) - len(pairs)


@dataclass
class LocalJudge:
    """Deterministic offline judge. Per answer, on 0-10 (P = predicted tools, T = ground truth):

    * tool_identification = 10 * (name F1 + detection F1) / 2 for this image, where detection F1
      uses class-aware one-to-one IoU>=0.5 matching; 10 if P and T are both empty.
    * Tools are paired one-to-one (IoU>=0.5 same-class match first, then same name whatever the
      box); D = pairs + unpaired P + unpaired T, so a missed or an invented tool contributes 0.
      With D = 0 (nothing there, nothing claimed) the three content scores are 10.
    * primary_function = 10 * sum over pairs of clip(sim(pred, ref) / t, 0, 1) / D;
    * safety_considerations = 10 * sum over pairs of (itemF1(PPE) + itemF1(hazards)) / 2 / D;
    * common_misuses = 10 * sum over pairs of itemF1(misuses) / D;
      itemF1 matches predicted to reference items one-to-one at similarity >= t.
      The reference is the KB entry of the ground-truth tool.
    * structured_output = 0 if no JSON could be read, or if the answer names no tool of the 17
      while the image has tools; else 10 * (valid + complete share) / 2, complete share = tools
      with all four safety fields / tools (1 for an empty list, which is then the right answer).

    `sim` is the cosine of MiniLM embeddings with t = `claims.threshold` when a `ClaimChecker` is
    given, otherwise the Dice coefficient of content words with t = `lexical_threshold`.
    """

    claims: object | None = None  # a hallucination.ClaimChecker, for embedding similarity
    lexical_threshold: float = 0.5
    name: str = "local"

    def _sim(self) -> tuple[Callable, float]:
        if self.claims is not None:
            return self.claims.similarity, self.claims.threshold
        return lexical_similarity, self.lexical_threshold

    def judge(self, case: JudgeCase) -> Judgment:
        P, T = case.predicted, case.truths
        sim, t = self._sim()
        # tool identification
        if not P and not T:
            ident = 10.0
        else:
            m = len(match_image(list(P), list(T), 0.5))
            _, _, det_f1 = _prf(m, len(P) - m, len(T) - m)
            both = sum((Counter(p["name"] for p in P) & Counter(x["name"] for x in T)).values())
            _, _, name_f1 = _prf(both, len(P) - both, len(T) - both)
            ident = 10 * (det_f1 + name_f1) / 2
        # content, per paired tool
        pairs, extra_p, extra_t = pair_tools(P, T)
        denom = len(pairs) + extra_p + extra_t
        if denom == 0:
            function = safety = misuse = 10.0
        else:
            fs = ss = ms = 0.0
            for i, j in pairs:
                p, ref = P[i], case.reference[T[j]["name"]]
                pf = str(p.get("primary_function") or "").strip()
                if pf:
                    fs += max(0.0, min(1.0, float(sim([pf], [ref["primary_function"]])[0][0]) / t))
                ss += (item_f1(p.get("required_ppe") or [], ref["required_ppe"], sim, t)
                       + item_f1(p.get("primary_hazards") or [], ref["primary_hazards"], sim, t)) / 2
                ms += item_f1(p.get("common_misuses") or [], ref["common_misuses"], sim, t)
            function, safety, misuse = (10 * v / denom for v in (fs, ss, ms))
        # structured output; an empty tool list for an image with tools is not a well-formed answer
        # about it, or a model that says nothing would outscore one that tries
        tools = case.parsed.report.tools
        if not case.parsed.json_ok or (not tools and T):
            structured = 0.0
        else:
            share = sum(tool_complete(x) for x in tools) / len(tools) if tools else 1.0
            structured = 10 * (float(case.parsed.valid) + share) / 2
        return Judgment(tool_identification=ident, primary_function=function,
                        safety_considerations=safety, common_misuses=misuse,
                        structured_output=structured, rationale="local rubric")


# ------------------------------------------------------------------------------------ LLM judge

JUDGE_SYSTEM_PROMPT = """You grade answers of a vision-language model that finds hand tools in a \
workbench photo and reports, as JSON, each tool's name, box [x1, y1, x2, y2] in pixels and safety \
information. You are given the REFERENCE (the tools truly in the image, with boxes in pixels of the \
original image and the knowledge-base entry of each) and the model's raw ANSWER.

Score the answer from 0 (worst) to 10 (best) on each dimension:
- tool_identification: are exactly the reference tools named, with boxes on them? Missing and \
invented tools both cost.
- primary_function: does each tool's primary_function agree with the reference?
- safety_considerations: are required_ppe and primary_hazards right for each tool, with nothing \
invented or belonging to another tool?
- common_misuses: are common_misuses right for each tool?
- structured_output: is the answer exactly one JSON object {"tools": [...]} whose tools have name, \
bbox_2d, primary_function, required_ppe, primary_hazards and common_misuses, with no text around it? \
An answer that lists no tool while the reference has tools scores 0 here.

Paraphrases count as agreement. Judge only against the reference, not outside knowledge.
Reply with one JSON object and nothing else:
{"tool_identification": <0-10>, "primary_function": <0-10>, "safety_considerations": <0-10>, \
"common_misuses": <0-10>, "structured_output": <0-10>, "rationale": "<one or two sentences>"}"""

MAX_ANSWER_CHARS = 6000


def judge_messages(case: JudgeCase) -> list[dict]:
    """The chat messages an LLM judge gets for one case (system rubric + reference + answer)."""
    reference = {
        "image_size": list(case.image_size) if case.image_size else None,
        "tools": [{"name": t["name"], "bbox_2d": [round(float(v), 1) for v in t["bbox_2d"]],
                   **case.reference[t["name"]]} for t in case.truths],
    }
    answer = case.text if isinstance(case.text, str) else str(case.text)
    if len(answer) > MAX_ANSWER_CHARS:
        answer = answer[:MAX_ANSWER_CHARS] + " [... cut]"
    user = (f"REFERENCE:\n{json.dumps(reference, ensure_ascii=False)}\n\n"
            f"ANSWER (boxes converted to original pixels by the grader where needed: "
            f"{json.dumps([{'name': p['name'], 'bbox_2d': p['bbox_2d']} for p in case.predicted])}):"
            f"\n{answer}")
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def cache_key(model: str, messages: list[dict]) -> str:
    """sha256 of the model name and the prompt: the on-disk cache key of one judgment."""
    payload = json.dumps({"model": model, "messages": messages}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _retryable(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


@dataclass
class OpenAIJudge:
    """LLM judge over any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama, ...).

    The key is read only from the environment variable `api_key_env` (default OPENAI_API_KEY).
    Requests use temperature 0 and `response_format={"type": "json_object"}`; the reply must
    validate as `Judgment` (all five scores numbers in 0..10). Every reply the endpoint gives is
    cached on disk under `cache_dir/<sha256(model + prompt)>.json` (default
    `~/.cache/safetyvlm/judge`) and re-validated on reading, so a
    rerun makes no request for anything answered before; transport failures are not cached.
    429, 5xx, connection errors and timeouts are retried with exponential backoff
    (`wait_base * 2**k` seconds, at most `wait_max`) up to `max_attempts` tries in all.
    `stats` counts requests, cache hits and failures by reason.
    """

    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    cache_dir: str | Path | None = None  # default ~/.cache/safetyvlm/judge
    max_attempts: int = 5
    wait_base: float = 1.0
    wait_max: float = 30.0
    timeout: float = 60.0
    name: str = "openai"
    stats: dict = field(default_factory=lambda: {"requests": 0, "cache_hits": 0, "failures": Counter()})

    def __post_init__(self):
        key = os.environ.get(self.api_key_env)
        if not key:
            raise RuntimeError(
                f"OpenAIJudge needs an API key in the environment variable {self.api_key_env}; "
                "set it (any non-empty value for a local server that ignores keys)"
            )
        import openai

        # Retries are ours (tenacity), so the client's own are off.
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0,
                                     timeout=self.timeout)
        self.cache_dir = (Path(self.cache_dir) if self.cache_dir is not None
                          else Path.home() / ".cache" / "safetyvlm" / "judge")

    def _request(self, messages: list[dict]) -> str:
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        for attempt in Retrying(stop=stop_after_attempt(self.max_attempts),
                                wait=wait_exponential(multiplier=self.wait_base, max=self.wait_max),
                                retry=retry_if_exception(_retryable), reraise=True):
            with attempt:
                self.stats["requests"] += 1
                resp = self._client.chat.completions.create(
                    model=self.model, messages=messages, temperature=0,
                    response_format={"type": "json_object"},
                )
                return resp.choices[0].message.content or ""
        raise AssertionError("unreachable")  # Retrying re-raises the last error

    def _fail(self, reason: str, detail: str) -> None:
        self.stats["failures"][reason] += 1
        log.warning("judge failed (%s): %s", reason, detail[:300])

    def judge(self, case: JudgeCase) -> Judgment | None:
        import openai

        messages = judge_messages(case)
        path = self.cache_dir / f"{cache_key(self.model, messages)}.json"
        if path.exists():
            self.stats["cache_hits"] += 1
            content = json.loads(path.read_text(encoding="utf-8"))["content"]
        else:
            try:
                content = self._request(messages)
            except openai.OpenAIError as exc:
                self._fail("api_error", f"{type(exc).__name__}: {exc}")
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"model": self.model, "content": content}), encoding="utf-8")
            os.replace(tmp, path)
        try:
            data = json.loads(content)
        except (json.JSONDecodeError, TypeError) as exc:
            self._fail("malformed_json", f"{exc}: {str(content)[:200]!r}")
            return None
        try:
            return Judgment.model_validate(data)
        except ValidationError as exc:
            self._fail("invalid_scores", str(exc))
            return None
