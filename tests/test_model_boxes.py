"""The box-frame converter: round trips within one frame step, frames match what processors do."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from safetyvlm.model.boxes import ModelFrame, frame_step, from_model_frame, model_frame, to_model_frame

QWEN_HUB = model_frame("qwen2_5_vl")  # the released processor's pixel budget
QWEN_TINY = ModelFrame(kind="resized_pixels", factor=28, min_pixels=56 * 56, max_pixels=112 * 112)
QWEN_SMALL = ModelFrame(kind="resized_pixels", factor=28, min_pixels=56 * 56, max_pixels=224 * 224)
MLLAMA = model_frame("mllama")
FRAMES = [QWEN_HUB, QWEN_TINY, QWEN_SMALL, MLLAMA]

side = st.integers(min_value=1, max_value=6000)


@st.composite
def image_and_box(draw):
    w, h = draw(side), draw(side)
    assume(max(w, h) / min(w, h) <= 200)  # smart_resize refuses more extreme ratios
    xs = sorted(draw(st.floats(0, w, allow_nan=False)) for _ in range(2))
    ys = sorted(draw(st.floats(0, h, allow_nan=False)) for _ in range(2))
    return (w, h), [xs[0], ys[0], xs[1], ys[1]]


def _check_round_trip(size, box, frame):
    fw, fh = frame.extent(size)
    m = to_model_frame(box, size, frame)
    assert all(isinstance(v, int) for v in m)
    assert 0 <= m[0] <= m[2] <= fw and 0 <= m[1] <= m[3] <= fh
    back = from_model_frame(m, size, frame)
    sx, sy = frame_step(size, frame)
    # half a frame step of rounding, plus 0.01 px of output rounding: well within one step
    for got, want, step in zip(back, box, (sx, sy, sx, sy)):
        assert abs(got - want) <= step / 2 + 0.011, (size, box, m, back)
    assert back[0] <= back[2] and back[1] <= back[3]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(image_and_box(), st.sampled_from(FRAMES))
def test_round_trip_within_one_frame_step(size_box, frame):
    size, box = size_box
    _check_round_trip(size, box, frame)


@pytest.mark.parametrize("size", [(4000, 20), (20, 4000), (200, 1), (1, 200), (1, 1), (4080, 1836),
                                  (6000, 6000), (29, 5000)])
@pytest.mark.parametrize("frame", FRAMES, ids=["qwen-hub", "qwen-tiny", "qwen-small", "mllama"])
def test_extreme_aspect_ratios_and_tiny_images(size, frame):
    w, h = size
    for box in ([0, 0, w, h], [w / 3, h / 5, w / 2, h * 0.9], [w, h, w, h]):
        _check_round_trip(size, box, frame)


def test_model_frame_boxes_are_clamped_back_into_the_image():
    size = (640, 480)
    assert to_model_frame([-5, -1, 700, 500], size, MLLAMA) == [0, 0, 1000, 1000]
    assert from_model_frame([-3, 0, 1200, 1000], size, MLLAMA) == [0.0, 0.0, 640.0, 480.0]


def test_mllama_frame_is_normalised_to_1000():
    assert to_model_frame([64, 48, 320, 480], (640, 480), MLLAMA) == [100, 100, 500, 1000]
    assert from_model_frame([100, 100, 500, 1000], (640, 480), MLLAMA) == [64.0, 48.0, 320.0, 480.0]


@pytest.mark.parametrize("size", [(224, 224), (320, 180), (150, 400), (33, 1000), (4080, 1836)])
@pytest.mark.parametrize("max_px", [112, 224])
def test_qwen_frame_is_the_grid_the_image_processor_produces(size, max_px):
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    ip = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=max_px ** 2, patch_size=14, merge_size=2,
                                  temporal_patch_size=2)
    frame = model_frame("qwen2_5_vl", ip)
    assert (frame.min_pixels, frame.max_pixels, frame.factor) == (56 * 56, max_px ** 2, 28)
    _, gh, gw = ip(images=Image.new("RGB", size), return_tensors="np")["image_grid_thw"][0].tolist()
    assert frame.extent(size) == (gw * 14, gh * 14)


def test_unknown_family_and_bad_sizes():
    with pytest.raises(ValueError):
        model_frame("llava")
    with pytest.raises(ValueError):
        to_model_frame([0, 0, 1, 1], (0, 10), MLLAMA)
