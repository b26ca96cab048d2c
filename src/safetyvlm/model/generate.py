"""Batched greedy generation with the one prompt builder; returns raw texts (the caller parses them).

`generate_scored` also returns, per generated token, the characters of the text it spells and its
log-probability, so the parser can give each tool a confidence (`parse_report(..., token_logprobs)`);
`generate_reports` is the same greedy call, texts only.

On CUDA, generation runs with PyTorch's cuDNN attention backend excluded (`no_cudnn_attention`): it
builds an execution plan for every new (query, key) length, i.e. at every decoding step of every new
prompt length. Measured on an H100 (torch 2.11, tiny presets, 16 images x 64 new tokens, six prompt
lengths): 3-6.6 s per batch with cuDNN, 0.4-0.5 s without (flash / memory-efficient kernels).

On a CPU, finished answers leave the batch (`generate_pruned`): `model.generate` decodes every row until
the longest answer of the batch ends, and a CPU step costs about in proportion to its rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from safetyvlm.model.prompts import build_messages
from safetyvlm.model.tokenizer import FAMILY_TOKENS


def _family(model) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


def stop_token_ids(model, processor) -> list[int]:
    """eos ids of the generation config, the tokenizer and the family's stop tokens, deduplicated."""
    tok = processor.tokenizer
    ids: list[int] = []
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += eos if isinstance(eos, (list, tuple)) else [eos]
    ids.append(tok.eos_token_id)
    family = FAMILY_TOKENS.get(_family(model) or "")
    vocab = tok.get_vocab()
    if family:
        ids += [vocab[t] for t in family.stop_tokens if t in vocab]
    out = []
    for i in ids:
        if i is not None and i not in out:
            out.append(int(i))
    return out


@contextlib.contextmanager
def no_cudnn_attention(enabled: bool = True):
    """Exclude the cuDNN SDPA backend inside the block (see the module docstring); no-op if disabled."""
    if not enabled:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        yield


def _per_image_passages(passages, n: int) -> list:
    if passages is None:
        return [None] * n
    if len(passages) and isinstance(passages[0], Mapping):  # one list shared by every image
        return [passages] * n
    if len(passages) != n:
        raise ValueError(f"passages must be None, one list of passages, or one list per image; "
                         f"got {len(passages)} lists for {n} images")
    return list(passages)


def prompt_texts(processor, passages_per_image: Sequence, task: str = "report") -> list[str]:
    return [processor.apply_chat_template(build_messages(p, task), add_generation_prompt=True, tokenize=False)
            for p in passages_per_image]


@dataclass
class Generation:
    """One answer: its text and, per generated token that spells part of it, (start, end) characters of
    `text` and the token's log-probability. Tokens that complete one multi-byte character share its span."""

    text: str
    token_logprobs: list[tuple[int, int, float]] = field(default_factory=list)


class ChosenLogprobs:
    """A logits processor that records, at each step, every row's best log-probability and token id.
    Greedy decoding picks exactly that token, so this is the chosen token's probability under the
    distribution generate chose from (after processors such as a repetition penalty, if configured).
    One number per row and step: `output_scores` would keep a vocabulary-wide tensor per step instead
    (25 rows x 152k vocabulary x 400 steps x 4 B = 6 GB for a 7B Qwen batch)."""

    def __init__(self):
        self.logprobs: list = []
        self.ids: list = []

    def __call__(self, input_ids, scores):
        import torch

        best = torch.log_softmax(scores.float(), dim=-1).max(dim=-1)
        self.logprobs.append(best.values)
        self.ids.append(best.indices)
        return scores


def token_spans(tokenizer, ids: Sequence[int], logprobs: Sequence[float], text: str) -> list[tuple[int, int, float]]:
    """(start, end, logprob) of each non-special token of `ids` in `text`, the decoded answer.

    Decoded incrementally (the tokenizers library's `DecodeStream`), so each token's characters are
    exactly those it added; [] if the pieces do not add up to `text` (a tokenizer whose full decode
    cleans up spaces), rather than misplaced spans.
    """
    from tokenizers.decoders import DecodeStream

    special = set(tokenizer.all_special_ids)
    stream = DecodeStream(skip_special_tokens=True)
    spans, pending, pieces, pos = [], [], [], 0
    for token, logprob in zip(ids, logprobs):
        if token in special:
            continue
        pending.append(float(logprob))
        piece = stream.step(tokenizer.backend_tokenizer, int(token))
        if piece:  # None while a character's bytes are incomplete: those tokens share the character
            spans += [(pos, pos + len(piece), lp) for lp in pending]
            pos += len(piece)
            pieces.append(piece)
            pending = []
    return spans if "".join(pieces) == text else []


CACHES = ("dynamic", "static")


def filled_static_cache(model, max_cache_len: int):
    """A static KV cache whose self-attention reads only the filled part of its preallocated tensors.

    transformers' static cache hands every decoding step the whole `max_cache_len` (masked), which only pays
    where the fixed shapes are compiled (a GPU). On a CPU the decoding step is bound by reading the cache:
    reading its filled part made batched eval answers 0.77x the time, token for token the same
    (benchmarks/generation_cpu.py). Cross-attention layers (Mllama's, over the image) keep what they are given;
    layers of other kinds (sliding-window, linear attention) stay as transformers builds them.
    """
    from transformers import StaticCache
    from transformers.cache_utils import DynamicLayer, StaticLayer

    class FilledStaticLayer(StaticLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            keys, values = super().update(key_states, value_states, *args, **kwargs)
            filled = int(self.cumulative_length)
            return keys[:, :, :filled], values[:, :, :filled]

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return int(self.cumulative_length) + query_length, 0

        def batch_select_indices(self, indices) -> None:  # finished rows leave the batch (generate_pruned)
            if self.is_initialized:
                self.keys, self.values = self.keys[indices], self.values[indices]
                self.batch_size = len(indices)

    cache = StaticCache(config=model.config, max_cache_len=max_cache_len)
    cross = set(getattr(model.config.get_text_config(decoder=True), "cross_attention_layers", None) or ())
    cache.layers = [DynamicLayer() if i in cross
                    else FilledStaticLayer(max_cache_len=max_cache_len) if type(layer) is StaticLayer else layer
                    for i, layer in enumerate(cache.layers)]
    return cache


class PruneWhenFinished:
    """A stopping criterion that ends a `generate` call once `min_steps` tokens are out and at least
    `fraction` of its rows (one at least) have ended, so that `generate_pruned` can drop them."""

    def __init__(self, prompt_len: int, stops: Sequence[int], min_steps: int = 32, fraction: float = 0.05):
        self.prompt_len, self.stops, self.min_steps, self.fraction = prompt_len, list(stops), min_steps, fraction

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids[:, self.prompt_len:]
        ended = torch.isin(new, torch.tensor(self.stops, device=new.device)).any(dim=1)
        pause = new.shape[1] >= self.min_steps and int(ended.sum()) >= max(1.0, self.fraction * len(ended))
        return ended | pause


def generate_pruned(model, inputs: Mapping, cache, *, max_new_tokens: int, stops: Sequence[int], pad_id: int,
                    min_steps: int = 32, fraction: float = 0.05) -> tuple[list[list[int]], list[list[float]],
                                                                            list[list[int]]]:
    """Greedy `model.generate` for the batch `inputs`, the rows whose answer has ended taken out of the batch
    (and of `cache`) every time `PruneWhenFinished` pauses the call; the other rows go on from the cache.

    Returns per row: the new token ids, each step's chosen log-probability and argmax (`ChosenLogprobs`).
    The same tokens as one `generate` call (tests), in less time on a CPU (benchmarks/generation_cpu.py,
    `:whole` settings). Qwen2.5-VL's rope offsets and Mllama's cross-attention mask are
    per-row state outside the cache: they are cut to the same rows.
    """
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    kw = dict(inputs)
    n = kw["input_ids"].shape[0]
    rows = list(range(n))
    ids: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[float]] = [[] for _ in range(n)]
    best: list[list[int]] = [[] for _ in range(n)]
    stop_set, done = set(stops), 0
    cross_mask = kw.get("cross_attention_mask")
    while rows and done < max_new_tokens:
        chosen = ChosenLogprobs()
        prompt_len = kw["input_ids"].shape[1]
        out = model.generate(**kw, max_new_tokens=max_new_tokens - done, do_sample=False, eos_token_id=list(stops),
                             pad_token_id=pad_id, logits_processor=LogitsProcessorList([chosen]), cache=cache,
                             stopping_criteria=StoppingCriteriaList([PruneWhenFinished(prompt_len, stops, min_steps,
                                                                                       fraction)]))
        new = out[:, prompt_len:]
        steps = new.shape[1]
        step_lp = torch.stack(chosen.logprobs, 1).tolist() if chosen.logprobs else [[]] * len(rows)
        step_best = torch.stack(chosen.ids, 1).tolist() if chosen.ids else [[]] * len(rows)
        keep = []
        for i, row in enumerate(rows):
            row_ids = new[i].tolist()
            ids[row] += row_ids
            logprobs[row] += step_lp[i]
            best[row] += step_best[i]
            if not stop_set.intersection(row_ids):
                keep.append(i)
        done += steps
        if not keep or done >= max_new_tokens:
            break
        index = torch.tensor(keep, device=out.device)
        mask = kw["attention_mask"]
        kw = {"input_ids": out[index],
              "attention_mask": torch.cat([mask, mask.new_ones(len(rows), steps)], dim=1)[index]}
        if cross_mask is not None:  # Mllama: each new token attends to the image as the last one did
            cross_mask = torch.cat([cross_mask, cross_mask[:, -1:].expand(-1, steps, *cross_mask.shape[2:])], dim=1)
            kw["cross_attention_mask"] = cross_mask = cross_mask[index]
        for module in model.modules():  # Qwen2.5-VL: each row's position offset, wherever it sits (PEFT wraps)
            if isinstance(vars(module).get("rope_deltas"), torch.Tensor):
                module.rope_deltas = module.rope_deltas[index]
        cache.batch_select_indices(index)
        rows = [rows[i] for i in keep]
    return ids, logprobs, best


# A compiled static-cache decoding step is specialised to its batch size and cache length: each new pair
# compiles again (tens of seconds for a 7B) and torch stops compiling after a few. On a GPU the static
# path therefore rounds the batch up to a power of two (repeating its last image; those answers are dropped)
# and the prompt up to a multiple of STATIC_PROMPT_STEP tokens (left padding, masked), so a service meets a
# handful of shapes, not one per batch a request mix makes.
STATIC_PROMPT_STEP = 64


def static_batch_size(n: int) -> int:
    """The batch size a static-cache batch of `n` images runs at on a GPU: the next power of two."""
    return 1 << max(0, n - 1).bit_length()


def fixed_shapes(device, cache: str) -> bool:
    """Whether batches are rounded to a few shapes (static_batch_size, STATIC_PROMPT_STEP): a compiled
    static cache on a GPU."""
    return device.type == "cuda" and cache == "static"


def check_cache(cache: str, name: str = "cache") -> None:
    """A clear error for a KV cache outside CACHES; `name` says which setting held it."""
    if cache not in CACHES:
        raise ValueError(f"{name} must be one of {', '.join(CACHES)}, got {cache!r}")


def generate_reports(model, processor, images, *, max_new_tokens: int = 512, passages: Sequence | None = None,
                     batch_size: int = 8, task: str = "report", cache: str = "dynamic") -> list[str]:
    """Greedy answers for `images` (PIL images), one string per image, in order (`generate_scored`'s texts)."""
    return [g.text for g in generate_scored(model, processor, images, max_new_tokens=max_new_tokens,
                                            passages=passages, batch_size=batch_size, task=task, cache=cache)]


def generate_scored(model, processor, images, *, max_new_tokens: int = 512,
                    passages: Sequence | None = None, batch_size: int = 8, task: str = "report",
                    cache: str = "dynamic", prune: bool = True) -> list[Generation]:
    """Greedy answers for `images` (PIL images) with per-token log-probabilities, one per image, in order.

    `passages`: None, one list of `{id, text}` for every image, or one list (or None) per image.
    `task`: "report" (the full contract) or "detect" (names and boxes; see prompts.py).
    Left padding; each sequence stops at the family's end-of-turn token; special tokens are dropped.
    `cache`: "dynamic" (grows with the answer) or "static" (preallocated to prompt + `max_new_tokens`:
    fixed shapes, so on a GPU transformers compiles the decoding step; on a CPU `filled_static_cache`; the
    same tokens, greedy). On a CPU each finished answer leaves the batch (`generate_pruned`; `prune=False`:
    the whole batch decodes until its longest answer ends, as on a GPU, where the batch is one `generate` call).
    A static cache on a GPU runs each batch at one of a few shapes (`fixed_shapes`).
    """
    check_cache(cache)
    import torch
    from transformers import DynamicCache, LogitsProcessorList

    images = [im.convert("RGB") for im in images]
    per_image = _per_image_passages(passages, len(images))
    tok = processor.tokenizer
    stops = stop_token_ids(model, processor)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    special = set(tok.all_special_ids)
    device = next(model.parameters()).device
    was_training = model.training
    old_side = tok.padding_side
    tok.padding_side = "left"
    model.eval()
    out: list[Generation] = []
    try:
        with torch.inference_mode(), no_cudnn_attention(device.type == "cuda"):
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size]
                batch_passages = per_image[start:start + batch_size]
                real, shapes = len(batch), {}
                if fixed_shapes(device, cache):  # few compiled shapes (STATIC_PROMPT_STEP says why)
                    extra = static_batch_size(len(batch)) - len(batch)
                    batch, batch_passages = batch + batch[-1:] * extra, batch_passages + batch_passages[-1:] * extra
                    shapes = {"pad_to_multiple_of": STATIC_PROMPT_STEP}
                texts = prompt_texts(processor, batch_passages, task)
                inputs = processor(images=[[im] for im in batch], text=texts, padding=True,
                                   add_special_tokens=False, return_tensors="pt", **shapes).to(device)
                if "pixel_values" in inputs and model.dtype.is_floating_point:
                    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
                if device.type == "cpu":  # finished rows leave the batch; a static cache reads its filled part
                    max_len = inputs["input_ids"].shape[1] + max_new_tokens
                    kv = filled_static_cache(model, max_len) if cache == "static" else DynamicCache(config=model.config)
                    rows_ids, logprobs, best = generate_pruned(
                        model, inputs, kv, max_new_tokens=max_new_tokens, stops=stops, pad_id=pad_id,
                        min_steps=32 if prune else max_new_tokens + 1)  # never pausing: one call
                    new = [torch.tensor(r, dtype=torch.long) for r in rows_ids]
                else:  # one call: a compiled static step keeps its shapes
                    chosen = ChosenLogprobs()
                    kv = {"cache_implementation": "static"} if cache == "static" else {}
                    generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                               eos_token_id=stops, pad_token_id=pad_id,
                                               logits_processor=LogitsProcessorList([chosen]), **kv)
                    new = generated[:, inputs["input_ids"].shape[1]:]
                    steps = len(chosen.logprobs)  # one per generated column
                    logprobs = torch.stack(chosen.logprobs, 1).tolist() if steps else [[]] * len(batch)
                    best = torch.stack(chosen.ids, 1).tolist() if steps else [[]] * len(batch)
                new = new[:real]  # not the rows that only filled a shape
                for row, text in enumerate(tok.batch_decode(list(new), skip_special_tokens=True)):
                    ids = new[row].tolist()
                    # Past a row's end generate writes padding, not the argmax (special tokens, skipped);
                    # any other difference means the recorded numbers are not these tokens': no scores.
                    if any(a != b for a, b in zip(ids, best[row]) if a not in special):
                        out.append(Generation(text))
                    else:
                        out.append(Generation(text, token_spans(tok, ids, logprobs[row], text)))
    finally:
        tok.padding_side = old_side
        model.train(was_training)
    return out
