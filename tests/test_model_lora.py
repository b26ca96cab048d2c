"""LoRA strategies adapt only their own tower, in both families; merging keeps the outputs."""

from __future__ import annotations

import re

import pytest
import torch
from test_model_presets import images, tiny_preset_dir, two_tool_report

from safetyvlm.model.lora import (
    STRATEGIES,
    count_lora_layers,
    lora_targets,
    make_lora_config,
    tower_of,
)

# linear layers per tower in the tiny presets (see presets.py)
#   qwen:   vision 4 blocks x (qkv, proj, gate, up, down) + merger 0/2 = 22; language 4 x 7 = 28
#   mllama: vision (3+1) layers x (q,k,v,o,fc1,fc2) + projector + 2 cross x (k,v) = 29;
#           language 3 self x 7 + 2 cross x (q, o, gate, up, down) = 31
EXPECTED = {"qwen2_5_vl": {"vision": 22, "language": 28}, "mllama": {"vision": 29, "language": 31}}


def _fresh(family):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_preset_dir(family)).eval()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "mllama"])
def test_every_linear_layer_but_lm_head_has_exactly_one_tower(family):
    model = _fresh(family)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    towers = {n: tower_of(family, n) for n in names}
    assert None not in towers.values(), [n for n, t in towers.items() if t is None]
    for n in names:  # the two regexes never overlap
        hits = [s for s in ("vision", "language") if re.fullmatch(lora_targets(family, s), n)]
        assert len(hits) == 1, (n, hits)
    if family == "mllama":  # the decision documented in lora.py
        assert tower_of(family, "model.language_model.layers.1.cross_attn.k_proj") == "vision"
        assert tower_of(family, "model.language_model.layers.1.cross_attn.q_proj") == "language"
        assert tower_of(family, "model.language_model.layers.1.mlp.up_proj") == "language"
        assert tower_of(family, "model.vision_model.transformer.layers.0.self_attn.q_proj") == "vision"
    else:  # bare MLP names also exist in the vision blocks (STACK.md pitfall)
        assert tower_of(family, "model.visual.blocks.0.mlp.gate_proj") == "vision"


@pytest.mark.parametrize("family", ["qwen2_5_vl", "mllama"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_touches_only_its_tower(family, strategy):
    from peft import get_peft_model

    model = get_peft_model(_fresh(family), make_lora_config(family, strategy, r=4, alpha=8, dropout=0.0))
    counts = count_lora_layers(model)
    want = {t: (EXPECTED[family][t] if t in strategy.split("_") else 0) for t in ("vision", "language")}
    assert counts == want
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "mllama"])
def test_vision_adapter_gets_gradient_from_the_first_step(family):
    from peft import get_peft_model

    from safetyvlm.model.batch import encode_batch
    from safetyvlm.model.boxes import model_frame
    from safetyvlm.model.processors import load_processor
    from safetyvlm.model.prompts import target_text

    processor = load_processor(tiny_preset_dir(family), family)
    model = get_peft_model(_fresh(family), make_lora_config(family, "vision", r=4, alpha=8, dropout=0.0))
    imgs = images(2)
    frame = model_frame(family, processor)
    batch = encode_batch(processor, imgs, [target_text(two_tool_report(), im.size, frame) for im in imgs])
    model.train()
    model(**batch).loss.backward()
    grads = [p.grad.abs().max().item() for n, p in model.named_parameters() if "lora_B" in n]
    assert len(grads) == EXPECTED[family]["vision"]
    # with Mllama's gates opened by the preset, every adapter inside the vision tower learns at once
    assert all(g > 0 for g in grads)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "mllama"])
def test_merge_and_unload_matches_the_adapted_model(family):
    from peft import get_peft_model

    from safetyvlm.model.batch import encode_batch
    from safetyvlm.model.processors import load_processor

    processor = load_processor(tiny_preset_dir(family), family)
    batch = encode_batch(processor, images(2))
    base = _fresh(family)
    with torch.inference_mode():
        plain = base(**batch).logits.clone()
    torch.manual_seed(1)
    cfg = make_lora_config(family, "vision_language", r=4, alpha=8, dropout=0.0, init_lora_weights=False)
    model = get_peft_model(base, cfg).eval()
    with torch.inference_mode():
        adapted = model(**batch).logits.clone()
        merged_model = model.merge_and_unload()
        merged = merged_model(**batch).logits
    assert not torch.allclose(adapted, plain, atol=1e-3)  # the adapter does something
    assert torch.allclose(merged, adapted, atol=1e-4, rtol=1e-4)
    assert not any("lora_" in n for n, _ in merged_model.named_parameters())


def test_unknown_strategy_or_family():
    with pytest.raises(ValueError):
        lora_targets("qwen2_5_vl", "all")
    with pytest.raises(ValueError):
        lora_targets("llava", "vision")
