"""LoRA strategies per family: which linear layers an adapter touches.

Strategies: `vision`, `language`, `vision_language` (the union). Each returns one full-match regex over
module names (peft treats a string `target_modules` as a regex matched against the whole name).
Regexes are anchored on the tower's path: the bare names `q_proj`/`gate_proj`/... also exist in
vision blocks (Qwen's vision MLP has `gate_proj/up_proj/down_proj`, Mllama's vision attention has
`q_proj..o_proj`), so a list of bare names is *not* language-only (STACK.md §3).

Which tower a layer belongs to: **the rule is what the layer reads.** A linear layer is "vision" when
its input is computed from the image alone, otherwise "language".

* Qwen2.5-VL — vision: `visual.blocks.*` attention/MLP and the merger MLP (it maps image patches into
  the language model's width); language: `language_model.layers.*` attention/MLP. Embeddings and
  `lm_head` are never targeted.
* Mllama — vision: `vision_model` (local and global encoder attention and MLP), the
  `multi_modal_projector`, and the cross-attention `k_proj`/`v_proj` of the language model's
  cross-attention layers: they live inside `language_model.layers.N.cross_attn` but read only the
  projected image features, exactly like Qwen's merger, so they are where image features are adapted
  to what the text asks. Language: all self-attention projections, every decoder MLP (including
  those of cross-attention layers) and the cross-attention `q_proj`/`o_proj` (they read and write the
  text's hidden states). So `vision` adapts how the image is encoded and presented to the text, and
  `language` adapts how text reads and answers, for both families alike; `vision_language` is both.

The tanh gates of Mllama's cross-attention are parameters, not linear layers: no strategy adapts
them (train them with `modules_to_save` if needed).
"""

from __future__ import annotations

import re

STRATEGIES = ("vision", "language", "vision_language")

_TARGETS = {
    "qwen2_5_vl": {
        "vision": r".*visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate_proj|up_proj|down_proj))"
                  r"|merger\.mlp\.(0|2))",
        "language": r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
    },
    "mllama": {
        "vision": r".*(vision_model\.(transformer|global_transformer)\.layers\.\d+\."
                  r"(self_attn\.(q|k|v|o)_proj|mlp\.(fc1|fc2))"
                  r"|multi_modal_projector"
                  r"|language_model\.layers\.\d+\.cross_attn\.(k|v)_proj)",
        "language": r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|cross_attn\.(q|o)_proj"
                    r"|mlp\.(gate|up|down)_proj)",
    },
}


def _check(family: str, strategy: str) -> None:
    if family not in _TARGETS:
        raise ValueError(f"unknown model family {family!r}; expected one of {tuple(_TARGETS)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown LoRA strategy {strategy!r}; expected one of {STRATEGIES}")


def lora_targets(family: str, strategy: str) -> str:
    """The full-match regex of module names that `strategy` adapts in `family`."""
    _check(family, strategy)
    t = _TARGETS[family]
    if strategy == "vision_language":
        return f"({t['vision']})|({t['language']})"
    return t[strategy]


def make_lora_config(family: str, strategy: str, r: int = 8, alpha: int = 16, dropout: float = 0.05,
                     **kwargs):
    """A `peft.LoraConfig` for `strategy`; extra keyword arguments go to LoraConfig unchanged."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                      target_modules=lora_targets(family, strategy), task_type="CAUSAL_LM", **kwargs)


def model_family(model) -> str:
    """`config.model_type` of a model, a PeftModel around it, or a merged model."""
    for candidate in (model, getattr(model, "base_model", None),
                      getattr(getattr(model, "base_model", None), "model", None)):
        config = getattr(candidate, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type in _TARGETS:
            return model_type
    raise ValueError("cannot tell the model family (config.model_type) of this model")


def tower_of(family: str, module_name: str) -> str | None:
    """'vision', 'language' or None for a module name, by the rule in the module docstring."""
    t = _TARGETS[family]
    if re.fullmatch(t["vision"], module_name):
        return "vision"
    if re.fullmatch(t["language"], module_name):
        return "language"
    return None


def count_lora_layers(model) -> dict[str, int]:
    """How many LoRA-adapted layers sit in each tower. An 'other' key appears only if nonzero."""
    from peft.tuners.lora import LoraLayer

    family = model_family(model)
    counts = {"vision": 0, "language": 0, "other": 0}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            counts[tower_of(family, name) or "other"] += 1
    if not counts["other"]:
        del counts["other"]
    return counts
