"""Scaling of the finetune step from 1 to N GPUs with DDP or FSDP (torchrun + the HF Trainer, as the
finetune stage runs with `finetune.distributed: ddp | fsdp`), on a full-size random-init checkpoint.

    python benchmarks/ddp_scaling.py --ckpt /dev/shm/qwen7b --gpus 1,2 --out benchmarks/results
    python benchmarks/ddp_scaling.py --ckpt /dev/shm/qwen7b --gpus 1,2 --quant 4bit --grad-ckpt   # QLoRA
    python benchmarks/ddp_scaling.py --ckpt /dev/shm/qwen7b --gpus 1,2 --mode fsdp

Each size runs `torchrun --nproc_per_node=N` of this file in worker mode: every rank loads the model
through the project's loader, adds the LoRA of the strategy, and trains `--steps` SFT steps of
`--batch` samples per rank (the finetune's own sample builder and TRL's SFTTrainer); rank 0 times the
steps (median after `--warmup`). Efficiency at N = throughput(N) / (N * throughput(1)), throughput in
samples/s. Goal: >= 85% at 2 GPUs with DDP. `--device cpu` on a tiny checkpoint runs the same on CPU
(gloo) as a check. FSDP shards the frozen base too (each LoRA leaf is its own FSDP unit: transformers
uses PEFT's wrap policy); 4-bit bases run with DDP only (FSDP of NF4 weights needs another storage type).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(args) -> None:
    import torch
    from peft import get_peft_model
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    sys.path.insert(0, str(HERE.parent))
    from gpu_real_path import make_split

    from safetyvlm.model.loader import load_model
    from safetyvlm.model.lora import make_lora_config
    from safetyvlm.train.distributed import is_main_process, trainer_args, world_size
    from safetyvlm.train.sft import sft_dataset

    cuda = args.device == "cuda"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local)
    model, processor, info = load_model(args.ckpt, device=device, dtype="bfloat16" if cuda else "float32",
                                        load_in_4bit=args.quant == "4bit")
    model = get_peft_model(model, make_lora_config(info["family"], args.strategy, 16, 32, 0.0))
    if args.grad_ckpt and info["family"] == "mllama":
        from safetyvlm.model.memory import checkpoint_mllama_vision

        checkpoint_mllama_vision(model)
    n = world_size()
    train = sft_dataset(make_split(args.batch * n * args.steps, args.image_px), processor, info["family"])
    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    extra = trainer_args(args.mode)
    if args.mode == "ddp":
        extra["ddp_find_unused_parameters"] = False  # v+l LoRA on both towers: every adapter gets a gradient
    cfg = SFTConfig(output_dir=f"/tmp/ddp-trainer-{os.getpid()}", max_steps=args.steps,
                    per_device_train_batch_size=args.batch, learning_rate=2e-4, logging_steps=1,
                    save_strategy="no", report_to=[], use_cpu=not cuda, bf16=cuda, max_length=None,
                    assistant_only_loss=True, dataloader_num_workers=0, disable_tqdm=True,
                    remove_unused_columns=False, gradient_checkpointing=args.grad_ckpt,
                    **(extra if n > 1 else {}))
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=train, processing_class=processor, callbacks=[Timer()])
    trainer.train()
    if is_main_process():
        step = statistics.median(times[args.warmup:] or times)
        out = {"world_size": n, "mode": args.mode if n > 1 else "none", "quant": args.quant,
               "grad_ckpt": args.grad_ckpt, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
               "per_rank_batch": args.batch, "strategy": args.strategy, "s_per_step": round(step, 4),
               "step_times": [round(t, 4) for t in times], "samples_per_s": round(args.batch * n / step, 3),
               "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}
        Path(args.result).write_text(json.dumps(out))


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True, help="a checkpoint dir (built here with --build if missing)")
    ap.add_argument("--build", default=None, help="family to build a full-size random-init checkpoint of")
    ap.add_argument("--gpus", default="1,2")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--strategy", default="vision_language")
    ap.add_argument("--mode", default="ddp", choices=("ddp", "fsdp"))
    ap.add_argument("--quant", default="bf16", choices=("bf16", "4bit"))
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (as finetune's option)")
    ap.add_argument("--baseline", default=None, help="a result JSON whose 1-GPU run is the baseline")
    ap.add_argument("--tag", default=None, help="result file suffix (default: mode-quant)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--image-px", type=int, default=448)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--result", default=None)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.build and not Path(args.ckpt, "config.json").exists():
        from safetyvlm.model.presets import build_full_checkpoint

        build_full_checkpoint(args.build, args.ckpt, device=args.device, dtype="bfloat16")
    runs = []
    for n in [int(x) for x in args.gpus.split(",")]:
        result = Path(f"/tmp/ddp-result-{n}.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", str(HERE),
               "--worker", "--result", str(result), "--ckpt", args.ckpt, "--device", args.device,
               "--strategy", args.strategy, "--batch", str(args.batch), "--steps", str(args.steps),
               "--mode", args.mode, "--quant", args.quant, *(["--grad-ckpt"] if args.grad_ckpt else []),
               "--warmup", str(args.warmup), "--image-px", str(args.image_px)]
        t = time.perf_counter()
        code = subprocess.call(cmd)
        if code or not result.exists():
            runs.append({"world_size": n, "ok": False, "exit_code": code})
            continue
        runs.append({**json.loads(result.read_text()), "ok": True, "wall_seconds": round(time.perf_counter() - t, 1)})
        print(json.dumps(runs[-1]), flush=True)
    base = next((r for r in runs if r.get("ok") and r["world_size"] == 1), None)
    if base is None and args.baseline:  # e.g. FSDP at 2 against the DDP run's 1-GPU figure
        base = next(r for r in json.loads(Path(args.baseline).read_text())["runs"] if r["world_size"] == 1)
    for r in runs:
        if base and r.get("ok"):
            r["efficiency"] = round(r["samples_per_s"] / (r["world_size"] * base["samples_per_s"]), 3)
    summary = {"baseline": args.baseline if base is not None and base not in runs else None, "mode": args.mode, "quant": args.quant, "grad_ckpt": args.grad_ckpt, "strategy": args.strategy,
               "runs": runs, "goal_efficiency_at_2": 0.85}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    device = next((r["device"] for r in runs if r.get("device")), "none").replace(" ", "_").lower()
    tag = args.tag or f"{args.mode}_{args.quant}{'_ckpt' if args.grad_ckpt else ''}"
    name = f"ddp_scaling_{device}_{tag}.json"
    (Path(args.out) / name).write_text(json.dumps(summary, indent=2) + "\n")
    for r in runs:
        print(f"{r['world_size']} x {r.get('device')}: {r.get('s_per_step')} s/step, {r.get('samples_per_s')} samples/s, "
              f"efficiency {r.get('efficiency')}")
    return summary


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
