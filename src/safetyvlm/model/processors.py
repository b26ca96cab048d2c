"""Processors that work without torchvision, and their registration with `AutoProcessor`.

* Qwen2.5-VL: the stock `Qwen2_5_VLProcessor` insists on a torchvision-backed video processor. The
  subclass below drops it (`ProcessorMixin` reads its attributes from the `__init__` signature) and
  uses the PIL image processor. It is registered for `Qwen2_5_VLConfig`, so that
  `AutoProcessor.from_pretrained(dir)` on a saved preset returns it (without the registration it
  silently returns only the tokenizer). Importing `safetyvlm.model` registers it.
* Mllama: the stock `MllamaProcessor` has no video part and works as is with `MllamaImageProcessorPil`
  (AutoImageProcessor picks the PIL backend when torchvision is missing), so it needs nothing here.

`load_processor(path, family)` is what the loader uses: it names the class explicitly, so hub
checkpoints (whose config says `Qwen2_5_VLProcessor`) also load without torchvision, and it works on
transformers 5.17 too (the GPU machine's), where `AutoProcessor.from_pretrained` ignores the registration
and returns only the tokenizer (verified on 5.17.0; 5.24.0 returns the subclass).
"""

from __future__ import annotations

from transformers import AutoProcessor, Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor


class Qwen25VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` for images only: no video processor, hence no torchvision."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)
        self.video_processor = None


def register_processors() -> None:
    AutoProcessor.register(Qwen2_5_VLConfig, Qwen25VLImageOnlyProcessor, exist_ok=True)


def load_processor(path, family: str, **kwargs):
    """Load the processor of a saved/cached checkpoint with the class that works for `family`."""
    if family == "qwen2_5_vl":
        return Qwen25VLImageOnlyProcessor.from_pretrained(path, **kwargs)
    if family == "mllama":
        from transformers import MllamaProcessor

        return MllamaProcessor.from_pretrained(path, **kwargs)
    raise ValueError(f"unknown model family {family!r}")


register_processors()
