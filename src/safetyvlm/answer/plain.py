"""Plain answers: generate for a batch of images, each answer read into a report in its image's pixels."""

from __future__ import annotations

from safetyvlm.answer.read import read_answer
from safetyvlm.model.boxes import model_frame
from safetyvlm.model.generate import generate_scored
from safetyvlm.parse import ParseResult


def predict_reports(model, processor, family: str, images, *, max_new_tokens: int = 400,
                    batch_size: int = 8, passages=None, task: str = "report", cache: str = "dynamic"
                    ) -> list[tuple[ParseResult, str]]:
    """(parsed report with boxes in image pixels, raw text) per image, in order; each tool carries
    its `score`, the model's probability of its name. `cache`: the KV cache (`generate_scored`)."""
    frame = model_frame(family, processor)
    answers = generate_scored(model, processor, images, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, passages=passages, task=task, cache=cache)
    return [(read_answer(answer.text, image.size, frame, token_logprobs=answer.token_logprobs), answer.text)
            for image, answer in zip(images, answers)]
