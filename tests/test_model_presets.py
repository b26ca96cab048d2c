"""Tiny presets of both families: build, forward + loss, save/reload, processor, loader, generation.

The tiny presets are built once per test session (`tiny_preset_dir`, shared with the other
test_model_* modules by import) into a temporary directory.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from safetyvlm.schema import CATEGORIES, SafetyReport

FAMILIES = ("qwen2_5_vl", "mllama")
EXTRA_TEXTS = [
    "Drives and removes nails.", "safety glasses (ANSI Z87.1)", "work gloves",
    "head flying off a loose handle", "striking hardened steel",
]


@functools.cache
def _session_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="safetyvlm-presets-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


@functools.cache
def tiny_preset_dir(family: str) -> Path:
    """Build the tiny preset of `family` once per session."""
    from safetyvlm.model.presets import build_preset

    return build_preset(family, "tiny", EXTRA_TEXTS, _session_dir() / f"{family}-tiny")


def images(n: int = 2) -> list[Image.Image]:
    sizes = [(224, 224), (320, 180), (150, 400), (64, 64)]
    return [Image.new("RGB", sizes[i % len(sizes)], (40 * i % 255, 120, 200)) for i in range(n)]


def report_inputs(processor, imgs):
    """The report prompt for `imgs`, left-padded as generate_scored batches it."""
    from safetyvlm.model.generate import prompt_texts

    tok = processor.tokenizer
    old_side, tok.padding_side = tok.padding_side, "left"
    try:
        return processor(images=[[im] for im in imgs], text=prompt_texts(processor, [None] * len(imgs)),
                         padding=True, add_special_tokens=False, return_tensors="pt")
    finally:
        tok.padding_side = old_side


def two_tool_report() -> SafetyReport:
    return SafetyReport.model_validate({"tools": [
        {"name": "Hammer", "bbox_2d": [10, 20, 120, 90], "primary_function": "Drives and removes nails.",
         "required_ppe": ["safety glasses (ANSI Z87.1)", "work gloves"],
         "primary_hazards": ["head flying off a loose handle"], "common_misuses": ["striking hardened steel"]},
        {"name": "Needle-nose pliers", "bbox_2d": [130, 40, 200, 170]},
    ]})


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def loaded(family):
    from safetyvlm.model.loader import load_model

    return load_model(tiny_preset_dir(family), device="cpu")  # fp32 on CPU everywhere: exact comparisons


# ------------------------------------------------------------------------------------------ tokenizer

def test_tokenizer_is_deterministic_and_makes_answers_short():
    from safetyvlm.model.tokenizer import build_tokenizer

    a = build_tokenizer("qwen2_5_vl", EXTRA_TEXTS)
    b = build_tokenizer("qwen2_5_vl", EXTRA_TEXTS)
    assert a.get_vocab() == b.get_vocab()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    for n in range(1001):  # every box integer is one token, after "[" and after ", "
        assert len(a(f"{n}")["input_ids"]) == 1, n
        assert len(a(f" {n}")["input_ids"]) == 1, n
    for name in CATEGORIES:  # one token per word piece of a category name
        assert len(a(name)["input_ids"]) <= len(name.replace("-", " - ").split())
    for piece in ('{"', '": "', '", "', '": [', '"]}, {"', "bbox_2d", "required_ppe"):
        assert len(a(piece)["input_ids"]) == 1, piece
    answer = two_tool_report().to_json(with_sources=False)
    assert len(a(answer)["input_ids"]) < len(answer) / 3.5


@pytest.mark.parametrize("fam", FAMILIES)
def test_chat_template_places_image_and_generation_prompt(fam):
    from safetyvlm.model.prompts import assistant_message, build_messages
    from safetyvlm.model.tokenizer import build_tokenizer, family_tokens

    tok = build_tokenizer(fam)
    ft = family_tokens(fam)
    text = tok.apply_chat_template(build_messages(), add_generation_prompt=True, tokenize=False)
    assert text.count(ft.image_token) == 1
    assert tok.padding_side == "left" and tok.eos_token == ft.eos and tok.pad_token == ft.pad
    full = tok.apply_chat_template(build_messages() + [assistant_message("{}")], tokenize=True, return_dict=True,
                                   return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(full["input_ids"], full["assistant_masks"]) if m]
    assert tok.decode(marked) == "{}" + ft.eos  # assistant_only_loss sees the answer and its end token


# ------------------------------------------------------------------------------------ presets/models

def test_preset_metadata_and_sizes(family):
    meta = json.loads((tiny_preset_dir(family) / "safetyvlm_preset.json").read_text())
    assert meta["family"] == family and meta["preset"]["name"] == "tiny"
    assert meta["image_px"] == 112
    assert 4e6 < meta["parameters"]["total"] < 9e6
    assert 1e6 < meta["parameters"]["vision"] < 3e6


def test_forward_loss_and_vision_gradient(family, loaded):
    from safetyvlm.model.batch import encode_batch
    from safetyvlm.model.boxes import model_frame
    from safetyvlm.model.prompts import target_text

    model, processor, _ = loaded
    frame = model_frame(family, processor)
    imgs = images(2)
    targets = [target_text(two_tool_report(), im.size, frame) for im in imgs]
    batch = encode_batch(processor, imgs, targets)
    assert (batch["labels"] != -100).sum(dim=1).min() > 10
    model.train()
    try:
        out = model(**batch)
        assert torch.isfinite(out.loss) and 4 < out.loss.item() < 12  # ~ln(vocab) at random init
        out.loss.backward()
        vision = [p.grad for n, p in model.named_parameters()
                  if ("visual" in n or "vision_model" in n) and p.grad is not None]
        # Mllama's cross-attention gates are opened by the preset, so the vision tower learns at once
        assert vision and max(g.abs().max().item() for g in vision) > 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_mllama_gates_are_open_after_reload():
    from safetyvlm.model.loader import load_model

    model, _, _ = load_model(tiny_preset_dir("mllama"), device="cpu")
    gates = {n: p.item() for n, p in model.named_parameters() if n.endswith(("cross_attn_attn_gate",
                                                                             "cross_attn_mlp_gate"))}
    assert len(gates) == 4 and all(math.isclose(v, math.pi / 4, rel_tol=1e-6) for v in gates.values())


def test_save_reload_and_rebuild_give_identical_logits(family, loaded, tmp_path):
    from transformers import AutoModelForImageTextToText

    from safetyvlm.model.batch import encode_batch
    from safetyvlm.model.presets import build_preset_parts

    model, processor, _ = loaded
    batch = encode_batch(processor, images(2))
    with torch.inference_mode():
        ref = model(**batch).logits
        model.save_pretrained(tmp_path)
        again = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
        assert torch.equal(again(**batch).logits, ref)
        rebuilt, _, _ = build_preset_parts(family, "tiny", EXTRA_TEXTS)  # seed 0: same weights
        assert torch.equal(rebuilt(**batch).logits, ref)


@pytest.mark.parametrize("how", ["load_processor", "AutoProcessor"])
def test_processor_round_trip(family, loaded, how):
    import transformers
    from packaging.version import Version
    from transformers import AutoProcessor

    from safetyvlm.model.batch import encode_batch
    from safetyvlm.model.processors import load_processor

    _, processor, _ = loaded
    if how == "AutoProcessor":
        if Version(transformers.__version__) < Version("5.24"):
            pytest.skip("transformers < 5.24 resolves a registered processor class by name only (see processors.py)")
        again = AutoProcessor.from_pretrained(tiny_preset_dir(family))
    else:
        again = load_processor(tiny_preset_dir(family), family)
    assert type(again) is type(processor)
    assert again.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert again.chat_template == processor.chat_template
    img = images(1)[0]  # 224 x 224
    a = encode_batch(processor, [img])
    b = encode_batch(again, [img])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if family == "qwen2_5_vl":  # 224 px -> 112 px: 8x8 patches, 16 merged image tokens
        assert a["image_grid_thw"].tolist() == [[1, 8, 8]]
    else:  # one 112 px tile
        assert tuple(a["pixel_values"].shape) == (1, 1, 1, 3, 112, 112)


# -------------------------------------------------------------------------------------------- loader

def test_loader_reports_its_choices(family, loaded):
    model, processor, info = loaded
    assert info["family"] == family and info["source"] == "preset"
    assert info["backend"] == "hf" and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["frame"]["kind"] == ("resized_pixels" if family == "qwen2_5_vl" else "normalized")
    assert info["parameters"]["total"] == sum(p.numel() for p in model.parameters())


def test_loader_auto_device_and_dtype():
    from safetyvlm.model.loader import load_model

    model, _, info = load_model(tiny_preset_dir("qwen2_5_vl"))
    if torch.cuda.is_available():
        assert info["device"] == "cuda" and info["dtype"] in ("bfloat16", "float16")
    else:
        assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert next(model.parameters()).device.type == info["device"]


def test_loader_rejects_a_family_mismatch():
    from safetyvlm.model.loader import ModelLoadError, load_model

    with pytest.raises(ModelLoadError, match="model_type is 'mllama'"):
        load_model(tiny_preset_dir("mllama"), family="qwen2_5_vl")


@pytest.mark.parametrize("hub_id", ["Qwen/Qwen2.5-VL-7B-Instruct", "meta-llama/Llama-3.2-11B-Vision-Instruct"])
@pytest.mark.parametrize("offline", ["1", None])
def test_uncached_hub_id_says_the_hub_is_unreachable(hub_id, offline, monkeypatch, tmp_path):
    from safetyvlm.model.loader import HubUnreachableError, load_model

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache, whatever this machine holds
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(HubUnreachableError, match="unreachable") as err:
        load_model(hub_id)
    assert "local path" in str(err.value) and hub_id in str(err.value)


def test_not_a_path_nor_hub_id():
    from safetyvlm.model.loader import ModelLoadError, load_model

    with pytest.raises(ModelLoadError, match="neither an existing directory"):
        load_model("./no/such/dir")


def test_4bit_without_cuda_or_bitsandbytes_names_what_is_missing():
    from safetyvlm.model.loader import QuantizationUnavailableError, load_model

    cuda = torch.cuda.is_available()
    try:
        import bitsandbytes  # noqa: F401
        bnb = True
    except ImportError:
        bnb = False
    if cuda and bnb:
        pytest.skip("4-bit loading is possible here")
    with pytest.raises(QuantizationUnavailableError, match="load_in_4bit=True needs") as err:
        load_model(tiny_preset_dir("qwen2_5_vl"), load_in_4bit=True)
    assert ("CUDA" in str(err.value)) == (not cuda)
    assert ("bitsandbytes" in str(err.value)) == (not bnb)


def test_backend_choice_and_unsloth_error():
    from safetyvlm.model.loader import BackendUnavailableError, choose_backend, load_model

    assert choose_backend("hf")[0] == "hf"
    backend, reason = choose_backend("auto")
    if not torch.cuda.is_available():
        assert backend == "hf" and "CUDA" in reason
    with pytest.raises(ValueError):
        choose_backend("vllm")
    try:
        import unsloth  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="unsloth"):
            load_model(tiny_preset_dir("mllama"), backend="unsloth")


# ---------------------------------------------------------------------------------------- generation

def test_generate_reports_one_string_per_image(family, loaded):
    from safetyvlm.model.generate import generate_reports

    model, processor, _ = loaded
    imgs = images(3)
    texts = generate_reports(model, processor, imgs, max_new_tokens=6, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    alone = generate_reports(model, processor, imgs[2:], max_new_tokens=6)
    assert alone == texts[2:]  # left padding does not change an answer
    with_passages = generate_reports(model, processor, imgs[:2], max_new_tokens=4,
                                     passages=[[{"id": "kb:1", "text": "Wear glasses."}], None])
    assert len(with_passages) == 2


def test_generate_scored_gives_each_token_its_characters_and_its_probability(family, loaded):
    """Greedy stays greedy (the same texts), the spans tile each text, and each log-probability is the
    one `compute_transition_scores` gives from generate's full `output_scores` for the same answer."""
    from safetyvlm.model.generate import generate_reports, generate_scored, stop_token_ids

    model, processor, _ = loaded
    imgs = images(3)
    scored = generate_scored(model, processor, imgs, max_new_tokens=12, batch_size=2)
    assert [g.text for g in scored] == generate_reports(model, processor, imgs, max_new_tokens=12, batch_size=2)
    for g in scored:
        assert g.token_logprobs and g.token_logprobs[0][0] == 0 and g.token_logprobs[-1][1] == len(g.text)
        assert all(a[1] in (b[0], b[1]) for a, b in zip(g.token_logprobs, g.token_logprobs[1:]))  # contiguous
        assert all(lp <= 0 for _, _, lp in g.token_logprobs)
    tok = processor.tokenizer
    inputs = report_inputs(processor, imgs[:1])
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, eos_token_id=stop_token_ids(model, processor),
                             pad_token_id=tok.pad_token_id)
    full = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)[0]
    ids = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    expected = [float(v) for i, v in zip(ids, full) if i not in tok.all_special_ids]
    assert [lp for _, _, lp in scored[0].token_logprobs] == pytest.approx(expected, abs=1e-4)


def test_a_static_cache_gives_the_same_greedy_answers_and_probabilities(family, loaded):
    """`cache="static"` (what the GPU service uses, for fixed shapes; on a CPU one whose attention reads only
    its filled part) changes where keys and values live, not what is decoded: the same texts and token
    log-probabilities as the dynamic cache."""
    from safetyvlm.model.generate import generate_scored

    model, processor, _ = loaded
    imgs = images(3)
    dynamic = generate_scored(model, processor, imgs, max_new_tokens=12, batch_size=2)
    asked, generate = [], model.generate
    def spy(**kw):  # records which cache each generate call was asked for
        asked.append(type(kw["cache"]).__name__ if "cache" in kw else kw.get("cache_implementation"))
        return generate(**kw)
    model.generate = spy
    try:
        static = generate_scored(model, processor, imgs, max_new_tokens=12, batch_size=2, cache="static")
    finally:
        del model.generate
    assert asked == ["StaticCache"] * 2 if next(model.parameters()).device.type == "cpu" else ["static"] * 2
    assert [g.text for g in static] == [g.text for g in dynamic]
    for s, d in zip(static, dynamic):
        assert [lp for *_, lp in s.token_logprobs] == pytest.approx([lp for *_, lp in d.token_logprobs], abs=1e-4)
    with pytest.raises(ValueError, match="cache must be one of"):
        generate_scored(model, processor, imgs[:1], max_new_tokens=2, cache="paged")


def test_fixed_shapes_round_the_batch_and_prompt_and_keep_the_answers(family, loaded, monkeypatch):
    """A compiled static cache on a GPU meets few shapes: a batch of 3 runs as 4 (the last image repeated,
    its answer dropped) and the prompt is left-padded to a multiple of STATIC_PROMPT_STEP. Forced here on a CPU:
    the three answers and their probabilities are the ones of the unpadded batch."""
    import safetyvlm.model.generate as gen

    assert [gen.static_batch_size(n) for n in (1, 2, 3, 5, 8, 9, 32)] == [1, 2, 4, 8, 8, 16, 32]
    model, processor, _ = loaded
    imgs = images(3)
    plain = gen.generate_scored(model, processor, imgs, max_new_tokens=12, batch_size=8, cache="static")
    seen, call = [], processor.__class__.__call__
    monkeypatch.setattr(processor.__class__, "__call__",
                        lambda self, *a, **kw: seen.append(call(self, *a, **kw)) or seen[-1])
    monkeypatch.setattr(gen, "fixed_shapes", lambda device, cache: True)
    fixed = gen.generate_scored(model, processor, imgs, max_new_tokens=12, batch_size=8, cache="static")
    assert [tuple(b["input_ids"].shape) for b in seen] == [(4, seen[0]["input_ids"].shape[1])]
    assert seen[0]["input_ids"].shape[1] % gen.STATIC_PROMPT_STEP == 0
    assert [g.text for g in fixed] == [g.text for g in plain]
    for f, p in zip(fixed, plain):
        assert [lp for *_, lp in f.token_logprobs] == pytest.approx([lp for *_, lp in p.token_logprobs], abs=1e-4)


def test_the_cpu_static_cache_attends_over_its_filled_part_only(family, loaded):
    """Preallocated for 10 tokens, 3 written: attention reads those 3 (and the mask covers them and the
    query), where transformers' own static layer would hand over all 10. Mllama's cross-attention layers
    keep exactly what they are given (the image's states)."""
    from safetyvlm.model.generate import filled_static_cache

    model, _, _ = loaded
    cache = filled_static_cache(model, 10)
    text = model.config.get_text_config(decoder=True)
    cross = set(getattr(text, "cross_attention_layers", None) or ())
    kinds = [type(layer).__name__ for layer in cache.layers]
    assert kinds == ["DynamicLayer" if i in cross else "FilledStaticLayer" for i in range(len(kinds))]
    layer = cache.layers[kinds.index("FilledStaticLayer")]
    k = torch.randn(2, text.num_key_value_heads, 3, text.hidden_size // text.num_attention_heads)
    keys, values = layer.update(k, k + 1)
    assert keys.shape[2] == values.shape[2] == 3 and torch.equal(keys, k) and torch.equal(values, k + 1)
    assert layer.keys.shape[2] == 10 and layer.get_mask_sizes(1) == (4, 0)
    keys, _ = layer.update(k[:, :, :1], k[:, :, :1])
    assert keys.shape[2] == 4 and torch.equal(keys[:, :, 3], k[:, :, 0])


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_finished_rows_leave_the_batch_and_the_others_decode_the_same_tokens(family, loaded, cache):
    """`generate_pruned` (the CPU path of generate_scored) drops a row once its answer ends and goes on with
    the others from the cache (Qwen's rope offsets and Mllama's cross-attention mask cut along): every row
    gets the tokens and log-probabilities of one plain `generate` call over the whole batch."""
    from transformers import DynamicCache, LogitsProcessorList

    from safetyvlm.model.generate import ChosenLogprobs, filled_static_cache, generate_pruned

    model, processor, _ = loaded
    inputs = report_inputs(processor, images(3))
    n_prompt, pad = inputs["input_ids"].shape[1], processor.tokenizer.pad_token_id

    def plain(stops):
        chosen = ChosenLogprobs()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=16, do_sample=False, eos_token_id=stops, pad_token_id=pad,
                                 logits_processor=LogitsProcessorList([chosen]))
        return out[:, n_prompt:].tolist(), torch.stack(chosen.logprobs, 1).tolist()

    free, _ = plain([pad])  # the random tiny model's own tokens; a stop that ends row 0 early and row 1 never
    stop = next(t for t in free[0][2:8] if t not in free[1] and t != pad)
    expected, expected_lp = plain([stop])
    sizes, generate = [], model.generate
    def spy(**kw):  # the rows of each generate call
        sizes.append(kw["input_ids"].shape[0])
        return generate(**kw)
    model.generate = spy
    try:
        kv = filled_static_cache(model, n_prompt + 16) if cache == "static" else DynamicCache(config=model.config)
        with torch.inference_mode():
            ids, logprobs, _ = generate_pruned(model, inputs, kv, max_new_tokens=16, stops=[stop], pad_id=pad,
                                               min_steps=1, fraction=0.01)
    finally:
        del model.generate
    assert sizes[0] == 3 and len(sizes) > 1 and sizes[-1] < 3  # row 0 left the batch
    for row in range(3):
        real = [t for t in expected[row] if t != pad]  # past its stop, the plain call pads a row
        assert ids[row][:len(real)] == real and all(t == pad for t in ids[row][len(real):])
        assert logprobs[row][:len(real)] == pytest.approx(expected_lp[row][:len(real)], abs=1e-4)
    assert ids[0][-1] == stop and len(ids[0]) < 16 and len(ids[1]) == 16


def test_pruned_generation_reaches_the_rope_offsets_through_a_peft_wrapper(family):
    """A LoRA-wrapped model (PEFT) keeps Qwen's rope offsets two wrappers down: with rows leaving the batch,
    it decodes what the plain model decodes (the adapter starts as a no-op)."""
    from peft import LoraConfig, get_peft_model
    from transformers import DynamicCache

    from safetyvlm.model.generate import generate_pruned
    from safetyvlm.model.loader import load_model

    model, processor, _ = load_model(tiny_preset_dir(family), device="cpu")
    inputs = report_inputs(processor, images(3))
    pad = processor.tokenizer.pad_token_id

    def answers(m, stops):
        with torch.inference_mode():
            return generate_pruned(m, inputs, DynamicCache(config=model.config), max_new_tokens=16, stops=stops,
                                   pad_id=pad, min_steps=1, fraction=0.01)[0]

    free = answers(model, [pad])
    stop = next(t for t in free[0][2:8] if t not in free[1] and t != pad)  # row 0 ends early, row 1 never
    plain = answers(model, [stop])
    assert plain[0][-1] == stop and len(plain[0]) < 16
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert answers(wrapped, [stop]) == plain


def test_trl_messages_collator_labels_exactly_what_encode_batch_labels(family, loaded):
    """TRL's `messages` form with `assistant_only_loss=True` trains on the same tokens as encode_batch.

    (TRL 1.16's prompt/completion form does not work for Mllama: the processor prepends
    `<|begin_of_text|>` to the completion and the cross-attention mask stops at the prompt.)
    """
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from safetyvlm.model.batch import encode_batch
    from safetyvlm.model.boxes import model_frame
    from safetyvlm.model.prompts import assistant_message, build_messages, target_text

    _, processor, _ = loaded
    frame = model_frame(family, processor)
    imgs = images(2)
    targets = [target_text(two_tool_report(), im.size, frame) for im in imgs]
    collate = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)
    trl_batch = collate([{"images": [im], "messages": build_messages() + [assistant_message(t)]}
                         for im, t in zip(imgs, targets)])
    ours = encode_batch(processor, imgs, targets)
    for i in range(2):
        assert (trl_batch["input_ids"][i][trl_batch["labels"][i] != -100].tolist()
                == ours["input_ids"][i][ours["labels"][i] != -100].tolist())
        n = int(ours["attention_mask"][i].sum())
        assert trl_batch["input_ids"][i][:n].tolist() == ours["input_ids"][i][:n].tolist()


def test_detect_task_batches_and_generates(family, loaded):
    from safetyvlm.model.batch import encode_batch
    from safetyvlm.model.generate import generate_reports

    model, processor, _ = loaded
    report_len = encode_batch(processor, images(1))["input_ids"].shape[1]
    detect = encode_batch(processor, images(1), ['{"tools": []}'], task="detect")
    assert detect["input_ids"].shape[1] < report_len  # the shorter instruction
    assert len(generate_reports(model, processor, images(2), max_new_tokens=3, task="detect")) == 2
