"""The procedural renderer: boxes from masks, determinism, balance, config handling, distinct shapes."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from safetyvlm.data.records import SourceExample
from safetyvlm.data.render import (
    RenderConfig,
    canonical_mask,
    image_classes,
    image_seed,
    mask_bbox,
    render_example,
    render_examples,
    render_scene,
)
from safetyvlm.schema import CATEGORIES, ToolReport

# No clutter / JPEG for the geometric checks: faster and irrelevant to boxes.
PLAIN = RenderConfig(clutter=0, jpeg_quality_range=None, blur=0.0, noise=0.0)


def _check_boxes(tools, masks, cfg):
    assert len(tools) == len(masks)
    for t, m in zip(tools, masks):
        x1, y1, x2, y2 = t["bbox_2d"]
        assert all(isinstance(v, int) for v in t["bbox_2d"])
        assert 0 <= x1 < x2 <= cfg.width and 0 <= y1 < y2 <= cfg.height
        assert m.shape == (cfg.height, cfg.width) and m.dtype == bool
        assert t["bbox_2d"] == mask_bbox(m)
        # pixel-edge convention: the slice holds every visible pixel
        assert m[y1:y2, x1:x2].sum() == m.sum() > 0
        ToolReport(name=t["name"], bbox_2d=t["bbox_2d"])  # fits the output contract
    # visible masks never overlap, and tools are listed left to right
    for a, b in itertools.combinations(masks, 2):
        assert not (a & b).any()
    keys = [(t["bbox_2d"][0], t["bbox_2d"][1]) for t in tools]
    assert keys == sorted(keys)


def test_mask_bbox_pixel_edge_convention():
    m = np.zeros((10, 12), dtype=bool)
    m[7, 5] = True
    assert mask_bbox(m) == [5, 7, 6, 8]
    m[2, 11] = True
    assert mask_bbox(m) == [5, 2, 12, 8]
    assert mask_bbox(np.zeros((4, 4), dtype=bool)) is None


@pytest.mark.parametrize("name", CATEGORIES)
def test_each_category_renders_alone(name):
    for seed in (0, 1):
        img, tools, masks = render_scene(seed, RenderConfig(), classes=[name], return_masks=True)
        assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (224, 224)
        assert [t["name"] for t in tools] == [name]
        _check_boxes(tools, masks, RenderConfig())
        # a sizeable object, not a speck
        assert masks[0].sum() > 150


def test_occluded_tool_box_is_its_visible_extent():
    cfg = RenderConfig(clutter=0, occlusion=1.0, min_visible=0.3, jpeg_quality_range=None)
    occluded = 0
    for seed in range(30):
        # Same seed with only the first class: the first tool is drawn identically (same rng stream),
        # so its mask there is the full (amodal) mask.
        _, _, full = render_scene(seed, cfg, classes=["Handsaw"], return_masks=True)
        _, tools, masks = render_scene(seed, cfg, classes=["Handsaw", "Tape measure"], return_masks=True)
        _check_boxes(tools, masks, cfg)
        saw = [m for t, m in zip(tools, masks) if t["name"] == "Handsaw"][0]
        tape = [m for t, m in zip(tools, masks) if t["name"] == "Tape measure"]
        expected = full[0] & ~tape[0] if tape else full[0]
        assert (saw == expected).all()
        if tape and (full[0] & tape[0]).any():
            occluded += 1
            box = [t["bbox_2d"] for t in tools if t["name"] == "Handsaw"][0]
            assert box == mask_bbox(expected)
            assert saw.sum() >= cfg.min_visible * full[0].sum()
    assert occluded >= 5  # occlusion really happens


def test_scenes_with_clutter_and_occlusion_have_consistent_boxes():
    cfg = RenderConfig(occlusion=0.8, max_tools=5, clutter=6)
    for seed in range(12):
        _, tools, masks = render_scene(seed, cfg, return_masks=True)
        _check_boxes(tools, masks, cfg)


def test_non_square_images():
    cfg = RenderConfig(width=320, height=192)
    for seed in range(5):
        img, tools, masks = render_scene(seed, cfg, return_masks=True)
        assert img.size == (320, 192)
        _check_boxes(tools, masks, cfg)


def test_post_processing_never_moves_boxes():
    noisy = RenderConfig(blur=2.0, noise=20.0, jpeg_quality_range=(20, 30))
    for seed in range(5):
        a = render_scene(seed, noisy)[1]
        clean = RenderConfig.from_dict({**noisy.to_dict(), "blur": 0.0, "noise": 0.0, "jpeg_quality_range": None})
        b = render_scene(seed, clean)[1]
        assert a == b


def test_deterministic_and_seed_sensitive():
    cfg = RenderConfig()
    a_img, a_tools = render_scene(123, cfg)
    np.random.seed(1)  # global state must not matter
    b_img, b_tools = render_scene(123, cfg)
    assert a_img.tobytes() == b_img.tobytes() and a_tools == b_tools
    c_img, _ = render_scene(124, cfg)
    assert a_img.tobytes() != c_img.tobytes()
    # a Generator and a SeedSequence are accepted too
    r1 = render_scene(np.random.default_rng(5), cfg)[0].tobytes()
    r2 = render_scene(np.random.default_rng(5), cfg)[0].tobytes()
    assert r1 == r2


def test_render_examples_deterministic_and_rerenderable():
    cfg = RenderConfig()
    first = list(render_examples(6, seed=7, cfg=cfg, split="valid"))
    again = list(render_examples(6, seed=7, cfg=cfg, split="valid"))
    for i, (a, b) in enumerate(zip(first, again)):
        assert isinstance(a, SourceExample)
        assert a.image_name == a.where == f"synthetic-valid-{i:06d}.png" and a.split == "valid"
        assert a.image.tobytes() == b.image.tobytes() and a.instances == b.instances
    # any image can be re-rendered alone, also from the middle of a range
    alone = render_example(7, 4, cfg, split="valid")
    assert alone.image.tobytes() == first[4].image.tobytes() and alone.instances == first[4].instances
    tail = list(render_examples(2, seed=7, cfg=cfg, split="valid", start=4))
    assert tail[0].image.tobytes() == first[4].image.tobytes()
    # the per-image seed reproduces the picture through render_scene
    img, tools = render_scene(image_seed(7, 3), cfg, classes=image_classes(7, 3, cfg))
    assert img.tobytes() == first[3].image.tobytes() and tools == first[3].instances
    # another seed (another split) gives other pictures
    other = list(render_examples(6, seed=8, cfg=cfg, split="valid"))
    assert all(a.image.tobytes() != b.image.tobytes() for a, b in zip(first, other))


def test_balanced_class_counts():
    cfg = RenderConfig(clutter=0, jpeg_quality_range=None)
    counts = Counter(t["name"] for ex in render_examples(170, seed=3, cfg=cfg) for t in ex.instances)
    assert set(counts) == set(CATEGORIES)
    assert max(counts.values()) - min(counts.values()) <= 3, counts


def test_min_max_tools_respected():
    cfg = RenderConfig(min_tools=2, max_tools=4, clutter=1, jpeg_quality_range=None)
    sizes = Counter()
    for ex in render_examples(40, seed=11, cfg=cfg):
        assert 2 <= len(ex.instances) <= 4
        sizes[len(ex.instances)] += 1
    assert set(sizes) == {2, 3, 4}
    unbalanced = RenderConfig(min_tools=1, max_tools=1, balanced=False, clutter=0)
    for ex in render_examples(10, seed=2, cfg=unbalanced):
        assert len(ex.instances) == 1


@pytest.mark.parametrize("balanced", [True, False])
def test_class_weights_honoured(balanced):
    weights = {"Hammer": 0.0, "Hand": 0.0, "Drill": 4.0}
    cfg = RenderConfig(class_weights=weights, balanced=balanced, clutter=0, jpeg_quality_range=None)
    counts = Counter(t["name"] for ex in render_examples(120, seed=5, cfg=cfg) for t in ex.instances)
    assert "Hammer" not in counts and "Hand" not in counts
    total = sum(counts.values())
    # Drill: 4 / (4 + 14 * 1) of all tools
    assert abs(counts["Drill"] / total - 4 / 18) < 0.08, counts


def test_config_from_dict():
    cfg = RenderConfig.from_dict({"width": 112, "height": 112, "jpeg_quality_range": [50, 60],
                                  "scale_range": [0.3, 0.5], "class_weights": {"Hammer": 2}})
    assert cfg.width == 112 and cfg.jpeg_quality_range == (50, 60) and cfg.scale_range == (0.3, 0.5)
    assert RenderConfig.from_dict(cfg.to_dict()) == cfg
    assert RenderConfig.from_dict({}) == RenderConfig()
    with pytest.raises(ValueError, match="occlusoin"):
        RenderConfig.from_dict({"occlusoin": 0.5})
    with pytest.raises(ValueError, match="class_weights"):
        RenderConfig.from_dict({"class_weights": {"Hamer": 1.0}})
    with pytest.raises(ValueError, match="max_tools"):
        RenderConfig.from_dict({"min_tools": 3, "max_tools": 2})
    with pytest.raises(ValueError, match="jpeg_quality_range"):
        RenderConfig.from_dict({"jpeg_quality_range": [90, 40]})
    with pytest.raises(ValueError, match="occlusion"):
        RenderConfig(occlusion=1.5)


def test_unknown_forced_class_rejected():
    with pytest.raises(ValueError, match="Hamer"):
        render_scene(0, PLAIN, classes=["Hamer"])


def test_categories_have_distinct_shapes():
    """Mean masks at the canonical pose (over random instances) differ between every two classes."""
    means = {c: np.mean([canonical_mask(c, seed=s) for s in range(6)], axis=0) >= 0.5 for c in CATEGORIES}
    for a, b in itertools.combinations(CATEGORIES, 2):
        inter = (means[a] & means[b]).sum()
        union = (means[a] | means[b]).sum()
        assert inter / union < 0.8, (a, b, inter / union)


def test_recolor_changes_tool_colours_not_boxes_and_backgrounds_are_chosen_from_the_list():
    # one tool a scene: the recolouring draw comes after it is placed, so the two renders share its pose
    plain = dict(clutter=0, jpeg_quality_range=None, blur=0.0, noise=0.0, backgrounds=("wood",), max_tools=1)
    base, recoloured = RenderConfig(**plain), RenderConfig(**plain, recolor=1.0)
    changed = 0
    for seed in range(4):
        im_a, tools_a, masks_a = render_scene(seed, base, return_masks=True)
        im_b, tools_b, _ = render_scene(seed, recoloured, return_masks=True)
        assert tools_a == tools_b
        a, b = np.asarray(im_a, dtype=int), np.asarray(im_b, dtype=int)
        inside = np.any(masks_a, axis=0) if masks_a else np.zeros(a.shape[:2], bool)
        changed += int(np.abs(a - b)[inside].mean() > 10) if inside.any() else 0
    assert changed >= 3
    with pytest.raises(ValueError, match="backgrounds"):
        RenderConfig.from_dict({"backgrounds": ["lava"]})
    with pytest.raises(ValueError, match="recolor"):
        RenderConfig.from_dict({"recolor": 1.5})
    assert RenderConfig.from_dict({"backgrounds": ["mat"]}).to_dict()["backgrounds"] == ["mat"]
