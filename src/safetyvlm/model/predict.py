"""Answer for images: generate, parse, and bring boxes back to each image's own pixels."""

from __future__ import annotations

from safetyvlm.model.boxes import from_model_frame, model_frame
from safetyvlm.model.generate import generate_scored
from safetyvlm.parse import ParseResult, parse_report


def to_image_pixels(result: ParseResult, image_size, frame) -> ParseResult:
    for tool in result.report.tools:
        tool.bbox_2d = from_model_frame(tool.bbox_2d, image_size, frame)
    for tool in result.unknown:
        tool["bbox_2d"] = from_model_frame(tool["bbox_2d"], image_size, frame)
    return result


def predict_reports(model, processor, family: str, images, *, max_new_tokens: int = 400,
                    batch_size: int = 8, passages=None, task: str = "report") -> list[tuple[ParseResult, str]]:
    """(parsed report with boxes in image pixels, raw text) per image, in order; each tool carries
    its `score`, the model's probability of its name."""
    frame = model_frame(family, processor)
    answers = generate_scored(model, processor, images, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, passages=passages, task=task)
    out = []
    for image, answer in zip(images, answers):
        result = parse_report(answer.text, image_size=frame.extent(image.size), token_logprobs=answer.token_logprobs)
        out.append((to_image_pixels(result, image.size, frame), answer.text))
    return out
