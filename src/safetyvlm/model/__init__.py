"""The model zoo: presets, the one loader, box frames, prompts, LoRA strategies and generation.

Submodules import lazily (transformers costs seconds); `from safetyvlm.model import load_model` works.

    tokenizer.py   byte-level BPE tokenizer trained locally (answers become short)
    presets.py     tiny/small random-init Qwen2.5-VL and Mllama, saved like hub checkpoints; base_model_path
    processors.py  torchvision-free processors, registered with AutoProcessor
    loader.py      load_model(name_or_path, ...) -> (model, processor, info); choose_backend
    boxes.py       original pixels <-> model frame (the only place boxes are scaled)
    prompts.py     INSTRUCTION, build_messages, target_text (the only prompt builder)
    generate.py    generate_reports / generate_scored: batched greedy decoding (+ per-token log-probabilities)
    batch.py       encode_batch: prompts + targets -> a batch with completion-only labels
    lora.py        lora_targets / make_lora_config / count_lora_layers per strategy
    memory.py      checkpoint_mllama_vision: gradient checkpointing that reaches Mllama's vision layers
    fast_path.py   Qwen2.5-VL's vision windows in one attention call, rope / window tables built ahead

Training loops are in `safetyvlm.train`, answering images in `safetyvlm.answer`.
"""

from importlib import import_module

_EXPORTS = {
    "build_tokenizer": "tokenizer",
    "PRESETS": "presets", "Preset": "presets", "build_preset": "presets", "build_preset_parts": "presets",
    "count_parameters": "presets", "get_preset": "presets",
    "load_model": "loader", "choose_backend": "loader", "ModelLoadError": "loader",
    "HubUnreachableError": "loader", "QuantizationUnavailableError": "loader",
    "BackendUnavailableError": "loader",
    "base_model_path": "presets", "BASE_RECORD": "presets",
    "ModelFrame": "boxes", "model_frame": "boxes", "to_model_frame": "boxes", "from_model_frame": "boxes",
    "INSTRUCTION": "prompts", "build_messages": "prompts", "assistant_message": "prompts",
    "target_text": "prompts",
    "generate_reports": "generate", "generate_scored": "generate", "Generation": "generate",
    "encode_batch": "batch",
    "STRATEGIES": "lora", "lora_targets": "lora", "make_lora_config": "lora", "count_lora_layers": "lora",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
