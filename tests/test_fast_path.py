"""The Qwen2.5-VL fast path (model/fast_path.py) changes how many kernels run, never the numbers."""

import numpy as np
import pytest
import torch

from safetyvlm.data.render import RenderConfig, render_scene
from safetyvlm.model.batch import encode_batch
from safetyvlm.model.boxes import model_frame
from safetyvlm.model.fast_path import PACKED_ATTENTION, compile_blocks, qwen_precomputed, use_packed_vision_attention
from safetyvlm.model.presets import build_preset_parts
from safetyvlm.model.prompts import detection_text


def _batch(proc, sizes):
    images, targets = [], []
    frame = model_frame("qwen2_5_vl", proc)
    for i, (w, h) in enumerate(sizes):
        image, tools = render_scene(np.random.default_rng([5, i]), RenderConfig(width=w, height=h, max_tools=2))
        images.append(image)
        targets.append(detection_text(tools, image.size, frame))
    return encode_batch(proc, images, targets, task="detect")


def _loss_and_grads(model, batch, extra=None):
    model.zero_grad(set_to_none=True)
    loss = model(**batch, **(extra or {})).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("sizes", [[(112, 112)] * 3, [(112, 112), (168, 112), (112, 224)]],
                         ids=["same-size", "mixed-sizes"])
def test_packed_attention_and_precomputed_tables_leave_loss_and_grads_unchanged(sizes):
    model, proc, _ = build_preset_parts("qwen2_5_vl", "tiny")
    model.train()
    batch = _batch(proc, sizes)
    loss0, grads0 = _loss_and_grads(model, batch)
    assert use_packed_vision_attention(model)
    assert model.config.vision_config._attn_implementation == PACKED_ATTENTION
    assert model.config.text_config._attn_implementation != PACKED_ATTENTION  # the language side untouched
    loss1, grads1 = _loss_and_grads(model, batch, qwen_precomputed(batch, model.config))
    assert torch.allclose(loss0, loss1, atol=1e-6)
    assert grads0.keys() == grads1.keys()
    for name in grads0:
        assert torch.allclose(grads0[name], grads1[name], atol=1e-6, rtol=1e-5), name


def test_precomputed_tables_are_the_ones_the_model_uses():
    # a wrong table must change the loss: proof the forward reads them instead of rebuilding its own
    model, proc, _ = build_preset_parts("qwen2_5_vl", "tiny")
    batch = _batch(proc, [(112, 112)] * 2)
    pre = qwen_precomputed(batch, model.config)
    with torch.no_grad():
        good = model(**batch, **pre).loss
        for key in ("position_ids", "image_position_ids"):
            bad = {**pre, key: pre[key].flip(-1)}
            assert model(**batch, **bad).loss != good, key


def test_packed_attention_is_not_saved_and_skips_other_families(tmp_path):
    model, _, _ = build_preset_parts("qwen2_5_vl", "tiny")
    use_packed_vision_attention(model)
    model.save_pretrained(tmp_path)
    assert PACKED_ATTENTION not in (tmp_path / "config.json").read_text()
    mllama, _, _ = build_preset_parts("mllama", "tiny")
    assert not use_packed_vision_attention(mllama)


@pytest.mark.parametrize("family,blocks", [("qwen2_5_vl", 4 + 4), ("mllama", 5 + 4)])
def test_compile_blocks_compiles_each_repeated_block_in_place(family, blocks):
    # what finetune.compile does after LoRA is attached: the module tree and state dict keys stay the same, so
    # PEFT saves and merges as usual (inductor compiles lazily, at the first forward: not run here)
    from peft import get_peft_model

    from safetyvlm.model.lora import make_lora_config

    model, _, _ = build_preset_parts(family, "tiny")
    model = get_peft_model(model, make_lora_config(family, "vision_language", 4, 8))
    keys = list(model.state_dict())
    assert compile_blocks(model) == blocks
    assert list(model.state_dict()) == keys
    compiled = [m for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert len(compiled) == blocks
    assert {type(m).__name__.endswith(("DecoderLayer", "EncoderLayer", "VisionBlock")) for m in compiled} == {True}
