"""Encode (image, target answer) pairs into a model batch with completion-only labels.

For hand-written training loops, benchmarks and tests; TRL's collators do the same job inside its
trainers. The text is exactly what `generate_reports` prompts with, followed by the target and the
tokenizer's end-of-turn token (`<|im_end|>` / `<|eot_id|>`), so training and inference never differ.
Labels are -100 everywhere except the target and that end token.
"""

from __future__ import annotations

from collections.abc import Sequence

from safetyvlm.model.generate import _per_image_passages, prompt_texts


def encode_batch(processor, images, targets: Sequence[str] | None = None, passages: Sequence | None = None,
                 task: str = "report"):
    """`processor(...)` output for the prompts (+ targets); with `targets`, also `labels`.

    Right-padded when `targets` are given (training), left-padded otherwise (generation).
    """
    import torch

    images = [im.convert("RGB") for im in images]
    prompts = prompt_texts(processor, _per_image_passages(passages, len(images)), task)
    tok = processor.tokenizer
    old_side = tok.padding_side
    try:
        if targets is None:
            tok.padding_side = "left"
            return processor(images=[[im] for im in images], text=prompts, padding=True,
                             add_special_tokens=False, return_tensors="pt")
        if len(targets) != len(images):
            raise ValueError(f"{len(targets)} targets for {len(images)} images")
        completions = [t + tok.eos_token for t in targets]
        tok.padding_side = "right"
        batch = processor(images=[[im] for im in images], text=[p + c for p, c in zip(prompts, completions)],
                          padding=True, add_special_tokens=False, return_tensors="pt")
    finally:
        tok.padding_side = old_side
    labels = torch.full_like(batch["input_ids"], -100)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    for i, completion in enumerate(completions):
        ids = tok(completion, add_special_tokens=False)["input_ids"]
        end = int(lengths[i])
        start = end - len(ids)
        if batch["input_ids"][i, start:end].tolist() != ids:
            raise RuntimeError("the target does not tokenize the same inside the prompt; cannot mask labels")
        labels[i, start:end] = batch["input_ids"][i, start:end]
    batch["labels"] = labels
    return batch
