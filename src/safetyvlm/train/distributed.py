"""Several processes (GPUs, or CPU processes with gloo) for the finetune, through torchrun + the HF Trainer.

`finetune.distributed: none | ddp | fsdp`. A stage started by DVC as a plain `python stages/...` calls
`relaunch_if_distributed`, which re-executes the same command under

    torchrun --standalone --nproc_per_node N stages/finetune.py <family> <strategy>

(the command a user can also type). Under torchrun the Trainer (Accelerate underneath) sets up DDP, or
FSDP2 (`fsdp=True`, full sharding), averages gradients across ranks and accumulates them per rank;
each rank reads its own share of every global batch. Only rank 0 writes outputs and metrics:
`output_dir` gives the other ranks a scratch dir that is thrown away.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from safetyvlm.io import atomic_output_dir

log = logging.getLogger("safetyvlm.distributed")

MODES = ("none", "ddp", "fsdp")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def default_processes() -> int:
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 2


def launch_command(script: str, args: list[str], processes: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            script, *args]


def relaunch_if_distributed(mode: str, processes: int | None, script: str, args: list[str]) -> None:
    """In a plain process with `mode` != none: run `script args` under torchrun and exit with its code."""
    if mode not in MODES:
        raise ValueError(f"finetune.distributed must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "none" or "LOCAL_RANK" in os.environ:
        return
    cmd = launch_command(script, args, processes or default_processes())
    print("distributed finetune:", " ".join(cmd), flush=True)
    sys.exit(subprocess.call(cmd))


@contextmanager
def output_dir(path: str | Path) -> Iterator[Path]:
    """`io.atomic_output_dir(path)` on rank 0; a scratch dir, removed afterwards, on the other ranks."""
    if is_main_process():
        with atomic_output_dir(path) as tmp:
            yield tmp
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"rank{rank()}-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_adapter_and_merged(trainer, out: Path, base_path, family: str) -> object | None:
    """Write `out/adapter` (the trained LoRA) and `out/merged` (base + adapter merged) on rank 0; returns
    the merged model there, None on the other ranks. Every rank must call it.

    Under DDP (or one process) the adapter is merged in place. Under FSDP each rank holds a shard:
    `trainer.save_model` gathers the full adapter state (a collective, hence every rank), then rank 0
    merges it into the base at `base_path`, loaded afresh, instead of the sharded one.
    """
    import torch
    from peft import PeftModel

    from safetyvlm.model.loader import load_model

    if not getattr(trainer, "is_fsdp_enabled", False):
        if not is_main_process():
            return None
        model = trainer.model
        model.save_pretrained(out / "adapter")
        merged = model.merge_and_unload()
        merged.save_pretrained(out / "merged", safe_serialization=True)
        return merged
    trainer.save_model(str(out / "adapter"))
    if not is_main_process():
        return None
    (out / "adapter" / "training_args.bin").unlink(missing_ok=True)  # a pickle: not part of our outputs
    base = load_model(base_path, family=family, backend="hf",
                      dtype="bfloat16" if torch.cuda.is_available() else "float32")[0]
    merged = PeftModel.from_pretrained(base, out / "adapter").merge_and_unload()
    merged.save_pretrained(out / "merged", safe_serialization=True)
    return merged


def trainer_args(mode: str) -> dict:
    """Extra TrainingArguments for `mode` (only meaningful under torchrun)."""
    if mode == "none" or world_size() == 1:
        return {}
    # LoRA leaves whole towers untouched (vision-only / language-only): DDP must expect unused parameters
    extra = {"ddp_find_unused_parameters": True}
    if mode == "fsdp":
        import torch

        if not torch.cuda.is_available():  # Accelerate applies FSDP to GPUs only; CPU processes get DDP
            log.warning("finetune.distributed=fsdp without CUDA: Accelerate runs DDP across the CPU processes")
            return extra
        # FSDP2 (transformers' default), parameters and gradients sharded, full state dict gathered to save
        extra = {"fsdp": True, "fsdp_config": {"version": 2, "reshard_after_forward": True,
                                               "state_dict_type": "FULL_STATE_DICT"}}
    return extra
