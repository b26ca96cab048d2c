"""Distributed finetune and preference training on CPU: 2 torchrun processes (gloo) against 1 process
with the doubled batch. (FSDP needs GPUs: on CPU processes Accelerate runs DDP, so it is measured on the
GPU machine, benchmarks/ddp_scaling.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safetyvlm.data.dataset import DatasetParams, build_dataset
from safetyvlm.train.distributed import launch_command, relaunch_if_distributed, trainer_args
from safetyvlm.train.sft import FinetuneConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "shipped"

RUN = """
import json, sys
from safetyvlm.train.sft import FinetuneConfig, finetune
cfg = FinetuneConfig(**{"rag_fraction": 0.0, **json.loads(sys.argv[1])})  # no index here
m = finetune(sys.argv[2], sys.argv[3], "qwen2_5_vl", "language", cfg, sys.argv[4])
print("METRICS", json.dumps(m))
"""


DPO_RUN = """
import json, sys
from datasets import Dataset
from safetyvlm.data.dataset import load_dataset_dir
from safetyvlm.model.boxes import model_frame
from safetyvlm.model.loader import load_model
from safetyvlm.model.prompts import assistant_message, build_messages, target_text
from safetyvlm.train.preferences import PrefsConfig, train_preferences
from safetyvlm.train.sft import report_of
cfg, base, data, out, mode = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
_, processor, _ = load_model(base, dtype="float32")
frame = model_frame("qwen2_5_vl", processor)
rows = [{"images": [r["image"]], "prompt": build_messages(),
         "chosen": [assistant_message(target_text(report_of(r["instances"]), r["image"].size, frame))],
         "rejected": [assistant_message('{"tools": []}')]} for r in load_dataset_dir(data)["train"].select(range(8))]
m = train_preferences(base, "qwen2_5_vl", PrefsConfig.from_dict(cfg), out, pairs=Dataset.from_list(rows),
                      backend="hf", distributed=mode)
print("METRICS", json.dumps(m))
"""


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "dataset"
    build_dataset(DatasetParams.from_dict({"sizes": {"train": 16, "valid": 2, "test": 2}, "seed": 7, "shifted": {}}), out)
    return out


def _finetune(cfg: dict, dataset_dir, out: Path, processes: int = 1) -> list[float]:
    out.parent.mkdir(parents=True, exist_ok=True)
    script = out.parent / "run_finetune.py"
    script.write_text(RUN)
    args = [json.dumps(cfg), str(SHIPPED / "qwen2_5_vl-tiny"), str(dataset_dir), str(out)]
    cmd = launch_command(str(script), args, processes) if processes > 1 else [sys.executable, str(script), *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [row["loss"] for row in json.loads((out / "train_log.json").read_text())]


@pytest.mark.slow
def test_two_gloo_processes_follow_one_process_with_the_doubled_batch(dataset_dir, tmp_path):
    common = dict(steps=4, lr=3e-3, warmup_steps=0, train_images=16, eval_images=0, log_every=1, seed=0,
                  train_lm_head=False)
    one = _finetune({**common, "batch_size": 4}, dataset_dir, tmp_path / "one" / "out")
    two = _finetune({**common, "batch_size": 2, "distributed": "ddp"}, dataset_dir, tmp_path / "two" / "out", 2)
    assert len(one) == len(two) == 4
    # same samples per step, gradients averaged over the two ranks: the same trajectory up to the
    # per-rank token weighting of the loss
    for a, b in zip(one, two):
        assert b == pytest.approx(a, rel=0.05)
    metrics = json.loads((tmp_path / "two" / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["distributed"] == "ddp"
    # only rank 0 wrote: one output dir, no leftovers from rank 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["out", "run_finetune.py"]


@pytest.mark.slow
def test_gradient_accumulation_across_ranks_matches_the_one_process_batch(dataset_dir, tmp_path):
    # 2 ranks x batch 1 x 2 accumulation steps = 4 samples an optimizer step, as 1 process x batch 4
    common = dict(steps=3, lr=3e-3, warmup_steps=0, train_images=16, eval_images=0, log_every=1, seed=0,
                  train_lm_head=False)
    one = _finetune({**common, "batch_size": 4}, dataset_dir, tmp_path / "one" / "out")
    acc = _finetune({**common, "batch_size": 1, "grad_accum": 2, "distributed": "ddp"}, dataset_dir,
                    tmp_path / "acc" / "out", 2)
    assert len(one) == len(acc) == 3
    for a, b in zip(one, acc):
        assert b == pytest.approx(a, rel=0.05)


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_checkpoint(dataset_dir, tmp_path):
    cfg = dict(steps=4, batch_size=2, lr=3e-3, warmup_steps=0, train_images=8, eval_images=0, log_every=1,
               train_lm_head=False, checkpoint_every=2)
    out = tmp_path / "out"
    # a previous run that stopped after its step-2 checkpoint: run 2 steps with checkpoints, keep them
    first = dict(cfg, steps=2)
    _finetune(first, dataset_dir, out)
    assert not Path(f"{out}.checkpoints").exists()  # a finished run removes its checkpoints
    # simulate the interruption: the checkpoints of a 4-step run killed after step 2
    script = tmp_path / "interrupt.py"
    script.write_text(RUN.replace("m = finetune(", "import transformers\n"
                                  "orig = transformers.Trainer._save_checkpoint\n"
                                  "def save_then_die(self, *a, **k):\n"
                                  "    orig(self, *a, **k)\n"
                                  "    import os; os._exit(3)\n"
                                  "transformers.Trainer._save_checkpoint = save_then_die\n"
                                  "m = finetune("))
    proc = subprocess.run([sys.executable, str(script), json.dumps(cfg), str(SHIPPED / "qwen2_5_vl-tiny"),
                           str(dataset_dir), str(tmp_path / "out2")], env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 3 and not (tmp_path / "out2").exists()
    assert (Path(f"{tmp_path / 'out2'}.checkpoints") / "checkpoint-2").is_dir()
    losses = _finetune(cfg, dataset_dir, tmp_path / "out2")
    metrics = json.loads((tmp_path / "out2" / "metrics.json").read_text())
    assert metrics["resumed_from"] == "checkpoint-2" and len(losses) >= 2
    assert not Path(f"{tmp_path / 'out2'}.checkpoints").exists()


def test_launch_command_and_mode_checks(monkeypatch):
    cmd = launch_command("stages/finetune.py", ["qwen2_5_vl", "vision"], 2)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[-3:] == ["stages/finetune.py", "qwen2_5_vl", "vision"]
    with pytest.raises(ValueError, match="distributed"):
        FinetuneConfig(distributed="horovod")
    relaunch_if_distributed("none", None, "x.py", [])  # returns: nothing to relaunch
    monkeypatch.setenv("LOCAL_RANK", "0")
    relaunch_if_distributed("ddp", 2, "x.py", [])  # already under torchrun: returns
    monkeypatch.setenv("WORLD_SIZE", "2")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no GPU here: only the arguments are built
    fsdp = trainer_args("fsdp")
    assert fsdp["fsdp"] is True and fsdp["fsdp_config"]["version"] == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CPU processes: Accelerate would run DDP
    assert trainer_args("fsdp") == {"ddp_find_unused_parameters": True}
    assert trainer_args("ddp") == {"ddp_find_unused_parameters": True}


def _dpo(cfg: dict, dataset_dir, out: Path, processes: int = 1) -> list[dict]:
    out.parent.mkdir(parents=True, exist_ok=True)
    script = out.parent / "run_dpo.py"
    script.write_text(DPO_RUN)
    args = [json.dumps(cfg), str(SHIPPED / "qwen2_5_vl-tiny"), str(dataset_dir), str(out),
            "ddp" if processes > 1 else "none"]
    cmd = launch_command(str(script), args, processes) if processes > 1 else [sys.executable, str(script), *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "train_log.json").read_text())


@pytest.mark.slow
def test_dpo_on_two_gloo_processes_follows_one_process_with_the_doubled_batch(dataset_dir, tmp_path):
    common = {"method": "dpo", "strategy": "language", "log_every": 1, "seed": 0}
    one = _dpo({**common, "dpo": {"steps": 3, "batch_size": 4, "lr": 5e-3}}, dataset_dir, tmp_path / "one" / "out")
    two = _dpo({**common, "dpo": {"steps": 3, "batch_size": 2, "lr": 5e-3}}, dataset_dir, tmp_path / "two" / "out", 2)
    assert len(one) == len(two) == 3
    assert two[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1: log(2)
    # the same 4 pairs a step, split over two ranks, gradients averaged: the same trajectory
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.02, abs=1e-3)
        assert b["rewards/margins"] == pytest.approx(a["rewards/margins"], rel=0.05, abs=2e-3)
    assert two[-1]["loss"] < two[0]["loss"]
    metrics = json.loads((tmp_path / "two" / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["distributed"] == "ddp" and metrics["trained"]
    assert (tmp_path / "two" / "out" / "merged" / "model.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["out", "run_dpo.py"]  # rank 0 wrote alone
