"""Retrieval-augmented answering: detect, retrieve for what was detected, answer again with passages.

1. first pass: `generate_reports` without passages, parsed with `parse_report` -> detected tool names;
2. `retriever.retrieve(detected tools)` per image (general passages when nothing was detected);
3. second pass: `generate_scored(..., passages=...)`; the one prompt builder places the passages in its
   delimited block before the unchanged instruction (passages are data, never instructions). Its
   per-token log-probabilities come with the answer, for the tools' scores.

Each `RetrievalAnswer.text` is raw model text: `read_answer` (read.py) turns it into a report in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from safetyvlm.model.generate import generate_reports, generate_scored
from safetyvlm.parse import parse_report


@dataclass
class RetrievalAnswer:
    text: str                                   # the second-pass answer (raw model text)
    passage_ids: list[str]                      # ids of the passages in its prompt, in prompt order
    detected: list[str]                         # tools the first pass named (categories, deduplicated)
    first_pass_text: str = ""
    passages: list = field(default_factory=list)   # the `rag.retrieve.RetrievedPassage`s in its prompt
    token_logprobs: list[tuple[int, int, float]] = field(default_factory=list)  # of `text`, for read_answer


def detected_tools(text: str) -> list[str]:
    """Category names in a first-pass answer, in order, without repeats."""
    return list(dict.fromkeys(t.name for t in parse_report(text).report.tools))


def answer_with_retrieval(model, processor, images, retriever, *, k: int | None = None, rerank=None,
                          max_new_tokens: int = 512, batch_size: int = 8,
                          first_pass_task: str = "report", first_pass: Sequence[str] | None = None,
                          cache: str = "dynamic") -> list[RetrievalAnswer]:
    """One `RetrievalAnswer` per image, in order (see the module docstring for the three steps).

    `first_pass`: the model's plain answers for these images when already generated (the same greedy
    call would give the same texts), so the first pass is not run twice. `cache`: the KV cache of both passes
    (`generate_scored`).
    """
    images = list(images)
    if first_pass is not None and len(first_pass) != len(images):
        raise ValueError(f"{len(first_pass)} first-pass answers for {len(images)} images")
    first = list(first_pass) if first_pass is not None else generate_reports(
        model, processor, images, max_new_tokens=max_new_tokens, batch_size=batch_size, task=first_pass_task,
        cache=cache)
    detected = [detected_tools(t) for t in first]
    by_tools: dict[tuple[str, ...], list] = {}  # one retrieval per distinct set of detected tools
    retrieved: list[list] = []
    for tools in detected:
        key = tuple(tools)
        if key not in by_tools:
            by_tools[key] = retriever.retrieve(tools, k=k, rerank=rerank)
        retrieved.append(by_tools[key])
    prompt_passages: Sequence = [[p.as_prompt_passage() for p in ps] for ps in retrieved]
    second = generate_scored(model, processor, images, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, passages=prompt_passages, cache=cache)
    return [RetrievalAnswer(text=g.text, passage_ids=[p.id for p in ps], detected=d, first_pass_text=f, passages=ps,
                            token_logprobs=g.token_logprobs)
            for g, ps, d, f in zip(second, retrieved, detected, first)]
