"""Fewer, larger kernels for Qwen2.5-VL's vision side: same numbers, a fraction of the launches.

Without flash-attn, transformers' Qwen2.5-VL vision attention splits the packed patch sequence at every
window and calls attention once per window, per layer, forward and backward: at a training batch of 256
scenes that is thousands of tiny kernels a step, and the GPU waits on Python. Its rotary position ids,
window order and sequence boundaries are also rebuilt image by image on the device, each step.

* `packed_vision_attention`: registered with transformers' `AttentionInterface`; when every window has
  the same length (always, when all images share a size, as in base training) one batched SDPA call does
  them all; otherwise one call per window, as transformers does. The name contains "flash" because that
  is what makes the vision attention hand over `cu_seqlens` instead of splitting itself.
* `qwen_precomputed`: the same position ids and window tables, computed on the CPU in data-loader
  workers with transformers' own helpers and passed in as the precomputed kwargs the model accepts.

Both leave the loss and gradients unchanged (tests/test_fast_path.py).
"""

from __future__ import annotations

PACKED_ATTENTION = "flash_packed_sdpa"


def packed_vision_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                            cu_seq_lens_q=None, max_length_q=None, is_causal=False, **kwargs):
    """Bidirectional attention over packed windows. query/key/value: (1, heads, tokens, head_dim).
    Returns (1, tokens, heads, head_dim), the layout of transformers' flash-attention functions."""
    import torch
    import torch.nn.functional as F

    heads, tokens, dim = query.shape[1], query.shape[2], query.shape[3]
    lengths = cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]
    n = lengths.numel()
    if max_length_q is not None and n * int(max_length_q) == tokens:  # all windows equally long
        q, k, v = (t.reshape(heads, n, tokens // n, dim).transpose(0, 1) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, scale=scaling, dropout_p=dropout)
        return out.transpose(0, 1).reshape(1, heads, tokens, dim).transpose(1, 2), None
    splits = [torch.split(t, lengths.tolist(), dim=2) for t in (query, key, value)]
    out = torch.cat([F.scaled_dot_product_attention(q, k, v, scale=scaling, dropout_p=dropout)
                     for q, k, v in zip(*splits)], dim=2)
    return out.transpose(1, 2), None


def compile_blocks(model) -> int:
    """Regional compilation: `torch.compile` each repeated block (the language model's decoder layers, the
    vision tower's blocks or encoder layers) in place instead of the whole model, so that inductor compiles
    one layer of each kind and the others reuse it (compiling the whole 7B with its LoRA layers ran past 240 s
    on an H100; by blocks the first step takes 1-2 minutes, then the 7B's bf16 LoRA step 0.49 s against 0.70:
    docs/gpu.md). The module tree and state dict keys stay as they were, so PEFT saves and merges as usual.
    Returns how many blocks."""
    kinds = ("DecoderLayer", "EncoderLayer", "VisionBlock")  # Qwen2.5-VL's and Mllama's repeated blocks
    blocks = [m for m in model.modules() if type(m).__name__.endswith(kinds)]
    for m in blocks:
        m.compile(dynamic=True)  # sequence lengths change every batch
    return len(blocks)


def use_packed_vision_attention(model) -> bool:
    """Switch a Qwen2.5-VL model's vision tower to `packed_vision_attention` when it runs transformers'
    SDPA or eager attention (flash-attn, where installed, already packs). Returns whether it switched."""
    from transformers import AttentionInterface

    vision = getattr(getattr(model, "config", None), "vision_config", None)
    if vision is None or getattr(model.config, "model_type", "") != "qwen2_5_vl":
        return False
    if vision._attn_implementation not in (None, "sdpa", "eager"):
        return False
    AttentionInterface.register(PACKED_ATTENTION, packed_vision_attention)
    model.set_attn_implementation({"vision_config": PACKED_ATTENTION})
    return True


class _RopeIndex:
    """Just enough of `Qwen2_5_VLModel` to run its `get_rope_index` on the CPU: the config alone."""

    def __init__(self, config):
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

        self.config = config
        self._model_cls = Qwen2_5_VLModel

    def __call__(self, **kw):
        return self._model_cls.get_rope_index(self, **kw)

    def get_vision_position_ids(self, *args, **kw):
        return self._model_cls.get_vision_position_ids(self, *args, **kw)


def qwen_precomputed(batch: dict, config) -> dict:
    """The tensors a Qwen2.5-VL forward would rebuild per image from `batch` (a processor output):
    3-D rope `position_ids` and the vision tower's `image_*` tables, for `model(**batch, **these)`."""
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

    vision = config.vision_config
    grid = batch["image_grid_thw"]
    position_ids, _ = _RopeIndex(config)(input_ids=batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                                         image_grid_thw=grid, attention_mask=batch["attention_mask"])
    cu_seqlens = get_vision_cu_seqlens(grid)
    window_index, cu_window = get_vision_window_index(grid, spatial_merge_size=vision.spatial_merge_size,
                                                      window_size=vision.window_size, patch_size=vision.patch_size)
    return {
        "position_ids": position_ids,
        "image_cu_seqlens": cu_seqlens,
        "image_max_seqlen": int((cu_seqlens[1:] - cu_seqlens[:-1]).max()),
        "image_window_index": window_index,
        "image_cu_window_seqlens": cu_window,
        "image_max_window_seqlen": int((cu_window[1:] - cu_window[:-1]).max()),
        "image_position_ids": get_vision_position_ids(grid, vision.spatial_merge_size),
    }

