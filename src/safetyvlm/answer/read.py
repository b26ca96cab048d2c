"""The one step from a model's text to a report in the image's pixels.

The parser reads the text in the model's own box frame (`model.boxes`: Qwen2.5-VL's resized pixels, Mllama's
0..1000) and clips the boxes there; then every box, of a tool named in the contract or of one named outside
it (`ParseResult.unknown`), is brought back to the pixels of the original image. The service, the eval, the
rewards and the benchmarks all read answers through `read_answer`, so a box is never scaled twice or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from safetyvlm.model.boxes import ModelFrame, from_model_frame
from safetyvlm.parse import ParseResult, parse_report

BoxToPixels = Callable[[Sequence[float], Sequence[int]], Sequence[float]]


def to_image_pixels(result: ParseResult, image_size: Sequence[int],
                    frame: ModelFrame | BoxToPixels | None) -> ParseResult:
    """`result` with every box moved from `frame` to the pixels of an image of `image_size` (width, height), in
    place. `frame`: the family's ModelFrame, or a function `(box, image_size) -> box`; None: pixels already."""
    if frame is None:
        return result
    convert = frame if callable(frame) else partial(from_model_frame, frame=frame)
    for tool in result.report.tools:
        tool.bbox_2d = convert(tool.bbox_2d, image_size)
    for tool in result.unknown:
        tool["bbox_2d"] = convert(tool["bbox_2d"], image_size)
    return result


def read_answer(text: object, image_size: Sequence[int], frame: ModelFrame | BoxToPixels | None = None, *,
                frame_size: Sequence[int] | None = None,
                token_logprobs: Sequence[tuple[int, int, float]] | None = None) -> ParseResult:
    """A model's answer about an image of `image_size` as the contract, boxes in that image's pixels; never
    raises (`parse_report`). The parser clips boxes to `frame_size`, by default the extent of the ModelFrame
    `frame` for this image (with a box function or None nothing is clipped unless it is given).
    `token_logprobs` (`model.generate.generate_scored`) give each tool its score."""
    if frame_size is None and isinstance(frame, ModelFrame):
        frame_size = frame.extent(image_size)
    return to_image_pixels(parse_report(text, frame_size, token_logprobs), image_size, frame)
