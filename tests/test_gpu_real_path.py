"""The real path on a GPU (benchmarks/gpu_real_path.py, README "The real path on a GPU").

On CPU (CI): the full-size layouts have the published values and sizes (counted on the meta device, no
memory), and the Mllama vision checkpointing helper is exact. With CUDA: the benchmark runs end to end
on a tiny preset (bf16 LoRA, generation, and 4-bit where bitsandbytes imports).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_qwen_7b_layout_has_the_published_values_and_size():
    from safetyvlm.model.presets import count_config_parameters, full_config_and_processor

    config, proc, *_ = full_config_and_processor("qwen2_5_vl")
    t, v = config.text_config, config.vision_config
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads,
            t.num_key_value_heads, t.vocab_size, t.rms_norm_eps) == (3584, 18944, 28, 28, 4, 152064, 1e-6)
    assert t.rope_parameters["rope_theta"] == 1e6 and t.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (v.depth, v.hidden_size, v.intermediate_size, v.num_heads, v.out_hidden_size, v.window_size,
            v.tokens_per_second) == (32, 1280, 3420, 16, 3584, 112, 2)
    assert list(v.fullatt_block_indexes) == [7, 15, 23, 31]
    counts = count_config_parameters(config)
    assert counts["total"] == 8_292_166_656  # 8.29B, 15.5 GiB in bf16 (STACK.md §10)
    assert proc.image_processor.size["longest_edge"] == 12845056


def test_mllama_11b_layout_uses_560px_tiles():
    from transformers import MllamaConfig

    from safetyvlm.model.presets import count_config_parameters, full_config_and_processor

    config, proc, *_ = full_config_and_processor("mllama")
    default = MllamaConfig()
    assert config.text_config.hidden_size == default.text_config.hidden_size == 4096
    assert config.text_config.num_hidden_layers == 40 and len(config.text_config.cross_attention_layers) == 8
    assert config.vision_config.image_size == 560 and proc.image_processor.size["height"] == 560
    assert count_config_parameters(config)["total"] == 10_670_220_835


def test_mllama_vision_checkpointing_is_exact():
    from transformers import MllamaConfig, MllamaForConditionalGeneration

    from safetyvlm.model.memory import checkpoint_mllama_vision

    cfg = MllamaConfig(
        text_config=dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, cross_attention_layers=[1],
                         bos_token_id=1, eos_token_id=2, pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_global_layers=1,
                           attention_heads=2, vision_output_dim=32, image_size=28, patch_size=14, max_num_tiles=1,
                           supported_aspect_ratios=[[1, 1]], intermediate_layers_indices=[0]),
        image_token_index=299)
    torch.manual_seed(0)
    model = MllamaForConditionalGeneration(cfg).train()
    for name, p in model.named_parameters():
        if "gate" in name:
            p.data.fill_(0.7)
    batch = dict(input_ids=torch.tensor([[299, 5, 6, 7, 8]]), pixel_values=torch.randn(1, 1, 1, 3, 28, 28),
                 aspect_ratio_ids=torch.tensor([[1]]), aspect_ratio_mask=torch.tensor([[[1]]]),
                 cross_attention_mask=torch.ones(1, 5, 1, 1, dtype=torch.long))

    def run():
        model.zero_grad()
        out = model(**batch).logits
        out.pow(2).mean().backward()
        grad = model.model.vision_model.transformer.layers[0].mlp.fc1.weight.grad.clone()
        return out.detach(), grad

    ref_out, ref_grad = run()
    assert checkpoint_mllama_vision(model) == 3
    assert checkpoint_mllama_vision(model) == 0  # idempotent
    out, grad = run()
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grad, ref_grad)


def _bench():
    spec = importlib.util.spec_from_file_location("gpu_real_path", ROOT / "benchmarks" / "gpu_real_path.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_real_path"] = module
    spec.loader.exec_module(module)
    return module


@cuda
def test_benchmark_runs_on_the_gpu(tmp_path):
    configs = ["matmul", "build", "train:vision_language:bf16:ckpt0:hf:bs2", "gen:bf16:dynamic:b2"]
    if importlib.util.find_spec("bitsandbytes"):
        configs += ["train:vision_language:4bit:ckpt1:hf:bs2:nohead", "gen:4bit:dynamic:b1"]
    _bench().main(["--preset", "tiny", "--device", "cuda", "--family", "qwen2_5_vl", "--out", str(tmp_path),
                   "--ckpt", str(tmp_path / "ckpt"), "--steps", "3", "--warmup", "1", "--gen-tokens", "8",
                   "--image-px", "224", "--configs", ",".join(configs)])
    rows = json.loads((tmp_path / "qwen2_5_vl-run.json").read_text())
    assert [r["config"] for r in rows] == configs
    assert all(r["ok"] for r in rows), [r.get("error") for r in rows]
    train = rows[2]
    assert train["s_per_step"] > 0 and 0 < train["mfu"] < 1 and train["peak_alloc_gib"] > 0


@pytest.mark.slow
def test_benchmark_code_paths_run_on_cpu_with_the_tiny_preset(tmp_path):
    """The same script the GPU runs: the service's Analyzer, decode-rate split, DPO with Mllama's vision
    checkpointing. Only the code paths are checked here (CPU timings mean nothing)."""
    configs = ["build", "analyze:b2", "gen:bf16:dynamic:b2", "dpo:bf16:bs2:ckpt"]
    _bench().main(["--preset", "tiny", "--device", "cpu", "--family", "mllama", "--out", str(tmp_path),
                   "--ckpt", str(tmp_path / "ckpt"), "--gen-tokens", "8", "--pref-steps", "2",
                   "--image-px", "224", "--configs", ",".join(configs)])
    rows = {r["config"]: r for r in json.loads((tmp_path / "mllama-run.json").read_text())}
    assert all(r["ok"] for r in rows.values()), [r.get("error") for r in rows.values()]
    analyze = rows["analyze:b2"]
    assert analyze["batch"] == 2 and len(analyze["runs_ms"]) == 3 and analyze["ms_per_image"] > 0
    gen = rows["gen:bf16:dynamic:b2"]
    assert gen["new_tokens"] == 8 and 0 < gen["prefill_seconds"] < gen["gen_seconds"]
    # the decode rate leaves the prefill out: faster than the end-to-end rate
    assert gen["decode_tokens_per_s"] > gen["tokens_per_s"] > 0 and gen["ms_per_decode_step"] > 0
    dpo = rows["dpo:bf16:bs2:ckpt"]
    assert dpo["grad_ckpt"] and dpo["steps"] == 2 and dpo["method"] == "dpo"


@pytest.mark.slow
def test_the_packed_vision_attention_switch_trains_the_same_first_step(tmp_path):
    """`:packed` (Qwen's vision windows in one attention call) changes kernels, not numbers: the first
    step's loss matches the plain run's on the same data; each row says which vision attention the model
    ran, so the switch is seen not to leak into the next configuration (the base is reloaded)."""
    from safetyvlm.model.fast_path import PACKED_ATTENTION

    configs = ["build", "train:vision_language:bf16:ckpt0:hf:bs2:packed", "train:vision_language:bf16:ckpt0:hf:bs2"]
    _bench().main(["--preset", "tiny", "--device", "cpu", "--family", "qwen2_5_vl", "--out", str(tmp_path),
                   "--ckpt", str(tmp_path / "ckpt"), "--steps", "2", "--warmup", "1", "--image-px", "224",
                   "--configs", ",".join(configs)])
    rows = {r["config"]: r for r in json.loads((tmp_path / "qwen2_5_vl-run.json").read_text())}
    assert all(r["ok"] for r in rows.values()), [r.get("error") for r in rows.values()]
    packed, plain = rows[configs[1]], rows[configs[2]]
    assert packed["vision_attention"] == PACKED_ATTENTION and plain["vision_attention"] == "sdpa"
    assert packed["loss_first_last"][0] == pytest.approx(plain["loss_first_last"][0], rel=1e-4)


@pytest.mark.slow
def test_scaling_script_runs_two_cpu_processes_and_reports_efficiency(tmp_path):
    import subprocess

    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ddp_scaling.py"), "--device", "cpu",
                           "--ckpt", str(ROOT / "models" / "shipped" / "qwen2_5_vl-tiny"), "--gpus", "1,2",
                           "--steps", "3", "--warmup", "1", "--image-px", "224", "--batch", "2",
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "ddp_scaling_cpu_ddp_bf16.json").read_text())
    one, two = result["runs"]
    assert one["ok"] and two["ok"] and one["world_size"] == 1 and two["world_size"] == 2
    assert two["mode"] == "ddp" and one["efficiency"] == 1.0
    assert two["efficiency"] == pytest.approx(two["samples_per_s"] / (2 * one["samples_per_s"]), abs=1e-3)
