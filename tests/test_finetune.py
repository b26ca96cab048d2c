"""The finetune stage's library on the shipped tiny bases: real LoRA steps, outputs, backend errors."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from safetyvlm.data.dataset import DatasetParams, build_dataset
from safetyvlm.model.loader import BackendUnavailableError, QuantizationUnavailableError, load_model
from safetyvlm.train.sft import FinetuneConfig, finetune

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "shipped"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "dataset"
    params = DatasetParams.from_dict({"sizes": {"train": 16, "valid": 4, "test": 2}, "seed": 3, "shifted": {}})
    build_dataset(params, out)
    return out


def small_cfg(**kw):
    base = dict(steps=6, batch_size=2, lr=3e-3, warmup_steps=1, train_images=16, eval_images=2,
                eval_batch_size=2, max_new_tokens=32, log_every=1, rag_fraction=0.0)
    return FinetuneConfig(**{**base, **kw})


@pytest.mark.slow
@pytest.mark.parametrize(
    "family,strategy,towers",
    [("qwen2_5_vl", "language", {"language"}), ("mllama", "vision", {"vision"}),
     ("qwen2_5_vl", "vision_language", {"vision", "language"})],
)
def test_lora_steps_lower_the_loss_and_save_adapter_and_merged_model(dataset_dir, tmp_path, family, strategy, towers):
    out = tmp_path / "ft"
    before = sorted(p.relative_to(dataset_dir) for p in dataset_dir.rglob("*"))
    metrics = finetune(str(SHIPPED / f"{family}-tiny"), dataset_dir, family, strategy, small_cfg(), out,
                       live_dir=tmp_path / "live")
    # the dataset is another stage's DVC output: training must not write (cache files) into it
    assert sorted(p.relative_to(dataset_dir) for p in dataset_dir.rglob("*")) == before
    log = json.loads((out / "train_log.json").read_text())
    assert len(log) == 6 and log[-1]["loss"] < log[0]["loss"]
    # the same curve through DVCLive, where dvc.yaml's plots read it
    curve = (tmp_path / "live/plots/metrics/loss.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "loss"]
    assert [round(float(r.split("\t")[1]), 4) for r in curve[1:]] == [round(h["loss"], 4) for h in log]
    assert {t for t, n in metrics["lora_layers"].items() if n} == towers
    assert (out / "adapter" / "adapter_config.json").exists()
    assert metrics["valid"]["images"] == 2 and 0 <= metrics["valid"]["json_valid"] <= 1
    # the merged model reloads through the one loader and answers like base + adapter
    from peft import PeftModel

    merged, processor, info = load_model(out / "merged", dtype="float32")
    base, _, _ = load_model(SHIPPED / f"{family}-tiny", dtype="float32")
    with_adapter = PeftModel.from_pretrained(base, out / "adapter").eval()
    from safetyvlm.model.batch import encode_batch
    from PIL import Image

    batch = encode_batch(processor, [Image.new("RGB", (64, 48), (90, 120, 30))], ['{"tools": []}'])
    with torch.no_grad():
        a, b = merged(**batch).logits, with_adapter(**batch).logits
    assert torch.allclose(a, b, atol=1e-3)


def test_backends_this_machine_cannot_run_are_clear_errors(dataset_dir, tmp_path):
    with pytest.raises(BackendUnavailableError, match="unsloth"):
        finetune(str(SHIPPED / "qwen2_5_vl-tiny"), dataset_dir, "qwen2_5_vl", "language",
                 small_cfg(backend="unsloth"), tmp_path / "a")
    with pytest.raises(QuantizationUnavailableError):
        finetune(str(SHIPPED / "qwen2_5_vl-tiny"), dataset_dir, "qwen2_5_vl", "language",
                 small_cfg(load_in_4bit=True), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unknown_finetune_params_are_rejected():
    with pytest.raises(ValueError, match="unknown keys"):
        FinetuneConfig.from_dict({"stepz": 3})


def test_predict_prints_a_report_per_image(tmp_path):
    from PIL import Image

    from safetyvlm.cli import main
    from safetyvlm.data.render import RenderConfig, render_scene

    image, _ = render_scene(5, RenderConfig())
    path = tmp_path / "scene.png"
    image.resize((448, 300)).save(path)
    result = CliRunner().invoke(main, ["predict", str(path), "--model", str(SHIPPED / "mllama-tiny"),
                                       "--max-new-tokens", "40", "--raw"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["image"] == str(path) and "raw" in line
    for tool in line["report"]["tools"]:  # boxes come back in the uploaded image's pixels
        x1, y1, x2, y2 = tool["bbox_2d"]
        assert 0 <= x1 < x2 <= 448 and 0 <= y1 < y2 <= 300


def test_predict_rejects_a_file_that_is_not_an_image(tmp_path):
    from safetyvlm.cli import main

    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    result = CliRunner().invoke(main, ["predict", str(bad), "--model", str(SHIPPED / "mllama-tiny")])
    assert result.exit_code != 0 and "not a readable image" in result.output


def test_answer_only_loss_follows_the_transformers_version(monkeypatch, caplog):
    import transformers

    from safetyvlm.train.sft import answer_only_loss_supported

    assert answer_only_loss_supported()  # the project's pin (5.24)
    monkeypatch.setattr(transformers, "__version__", "5.17.0")  # unsloth's environment
    assert not answer_only_loss_supported()
    assert "whole sequence" in caplog.text


def test_softened_output_layer_keeps_greedy_tokens_and_scales_logits():
    from safetyvlm.train.sft import soften_output_layer
    from safetyvlm.model.presets import build_preset_parts

    model, proc, _ = build_preset_parts("qwen2_5_vl", "tiny")
    ids = proc.tokenizer("Claw hammer", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(input_ids=ids).logits
        soften_output_layer(model, 3.0)
        after = model(input_ids=ids).logits
    assert torch.allclose(after, before / 3.0, atol=1e-5)
    assert after.argmax(-1).equal(before.argmax(-1))
    with pytest.raises(ValueError, match="lm_head_temperature"):
        FinetuneConfig(lm_head_temperature=0.0)


@pytest.mark.slow
def test_output_layer_learns_at_its_own_rate(dataset_dir, tmp_path):
    from safetensors.torch import load_file

    def head_shift(scale):
        out = tmp_path / f"ft-{scale}"
        finetune(str(SHIPPED / "qwen2_5_vl-tiny"), dataset_dir, "qwen2_5_vl", "language",
                 small_cfg(steps=3, eval_images=0, lm_head_lr_scale=scale), out)
        head = {k: v for k, v in load_file(out / "merged" / "model.safetensors").items() if "lm_head" in k}
        base = {k: v for k, v in load_file(SHIPPED / "qwen2_5_vl-tiny" / "model.safetensors").items() if "lm_head" in k}
        return max((head[k].float() - base[k].float()).abs().max().item() for k in base)

    # Adam moves a weight by about lr a step: three steps at the full rate move the head by ~3 * 3e-3,
    # at a hundredth of it by ~1e-4 (bf16 weights round to ~1e-3 of their size, hence the margin)
    full, slow = head_shift(1.0), head_shift(0.01)
    assert full > 3e-3 and slow < full / 5
    with pytest.raises(ValueError, match="lm_head_lr_scale"):
        FinetuneConfig(lm_head_lr_scale=0.0)


def test_cpu_loss_from_full_logits_is_trls_fused_loss(dataset_dir, tmp_path, monkeypatch):
    """On a CPU the finetune takes its loss from the model's own full logits instead of TRL's chunked fused
    output layer (sft_trainer_class says why): the same numbers, so the same training."""
    from trl import SFTTrainer

    import safetyvlm.train.sft as sft

    assert sft.sft_trainer_class(cuda=True) is SFTTrainer and sft.sft_trainer_class(cuda=False) is not SFTTrainer

    def curves(name):
        out, live = tmp_path / name, tmp_path / f"{name}-live"
        finetune(str(SHIPPED / "qwen2_5_vl-tiny"), dataset_dir, "qwen2_5_vl", "language",
                 small_cfg(steps=3, eval_images=0), out, live_dir=live)
        tsv = {m: [float(r.split("\t")[1]) for r in (live / f"plots/metrics/{m}.tsv").read_text().splitlines()[1:]]
               for m in ("entropy", "mean_token_accuracy")}
        return [h["loss"] for h in json.loads((out / "train_log.json").read_text())], tsv

    # and only the positions that predict answer tokens reach the output layer
    seen = {"sequence": [], "head": []}
    prepare = sft.SFTRun.prepare

    def watched(self, model):
        model.register_forward_pre_hook(lambda m, a, kw: seen["sequence"].append(kw["input_ids"].shape[1]),
                                        with_kwargs=True)
        model.lm_head.register_forward_hook(lambda m, a, out: seen["head"].append(out.shape[1]))
        return prepare(self, model)

    monkeypatch.setattr(sft.SFTRun, "prepare", watched)
    ours, ours_tsv = curves("full-logits")
    monkeypatch.setattr(sft.SFTRun, "prepare", prepare)
    assert len(seen["head"]) == len(seen["sequence"]) == 3
    assert all(0 < h < n for h, n in zip(seen["head"], seen["sequence"]))
    monkeypatch.setattr(sft, "sft_trainer_class", lambda cuda: SFTTrainer)
    fused, fused_tsv = curves("trl-fused")
    assert len(ours) == 3 and ours[-1] < ours[0]
    assert ours == pytest.approx(fused, rel=1e-4)
    # TRL's logged entropy and token accuracy of the answer tokens: the same figures from the full logits
    for metric, values in ours_tsv.items():
        assert len(values) == 3 and values == pytest.approx(fused_tsv[metric], rel=1e-3, abs=1e-4), metric
