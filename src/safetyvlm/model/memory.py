"""Training-memory fixes for Mllama (Llama-3.2-Vision), measured on an H100 (benchmarks/gpu_real_path.py).

Why 11B QLoRA peaked at 50-75 GiB with gradient checkpointing on (README, "The real path on a GPU"):

* `MllamaVisionEncoderLayer` is a plain `nn.Module`, not a `GradientCheckpointingLayer`, so
  `gradient_checkpointing_enable()` never reaches the 40 vision layers: every vision activation is kept.
* `PreTrainedModel.enable_input_require_grads()` (called by the trainer with PEFT + checkpointing) hooks
  every sub-model's input embeddings, the vision `patch_embedding` included, so the vision tower builds
  an autograd graph even when no vision parameter is trained (language-only LoRA: still 40.7 GiB).
* The processor pads every image to `max_image_tiles` = 4 tiles of 1601 patches: a 448-px image is one
  real tile plus three masked ones, which the vision tower still encodes (6404 tokens an image).
  Weights and dtypes are not the cause: the 4-bit model is 6.7 GiB, nothing in fp32.

`checkpoint_mllama_vision(model)` checkpoints those layers (exact: same outputs and gradients; opt-in,
a no-op for Qwen). Dropping the padded tiles would cut the vision work 4x for small images but is NOT
exact: Mllama's vision mask only blocks padding-to-padding pairs, so real patches attend to the padded
tiles (checked on CPU: logits moved by 0.1 of a max 0.7), hence it is not offered here.
"""

from __future__ import annotations


def checkpoint_mllama_vision(model) -> int:
    """Recompute each Mllama vision encoder layer in backward (non-reentrant checkpointing) while the
    model trains with grad enabled. Returns how many layers were wrapped (0 for other families)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    n = 0
    for module in model.modules():
        if type(module).__name__ != "MllamaVisionEncoderLayer" or getattr(module, "_svlm_ckpt", False):
            continue
        inner = module.forward

        def forward(*args, _inner=inner, _module=module, **kwargs):
            if _module.training and torch.is_grad_enabled():
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            return _inner(*args, **kwargs)

        module.forward = forward
        module._svlm_ckpt = True
        n += 1
    return n
