"""Several processes (GPUs, or CPU processes with gloo) for the finetune, through torchrun + the HF Trainer.

`finetune.distributed: none | ddp | fsdp`. A stage started by DVC as a plain `python stages/...` calls
`relaunch_if_distributed`, which re-executes the same command under

    torchrun --standalone --nproc_per_node N stages/finetune.py <family> <strategy>

(the command a user can also type). Under torchrun the Trainer (Accelerate underneath) sets up DDP, or
FSDP with `fsdp="full_shard auto_wrap"`, averages gradients across ranks and accumulates them per rank;
each rank reads its own share of every global batch. Only rank 0 writes outputs and metrics:
`output_dir` gives the other ranks a scratch dir that is thrown away.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
    from safetyvlm.io import atomic_output_dir

    if is_main_process():
        with atomic_output_dir(path) as tmp:
            yield tmp
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"rank{rank()}-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def trainer_args(mode: str) -> dict:
    """Extra TrainingArguments for `mode` (only meaningful under torchrun)."""
    if mode == "none" or world_size() == 1:
        return {}
    # LoRA leaves whole towers untouched (vision-only / language-only): DDP must expect unused parameters
    extra = {"ddp_find_unused_parameters": True}
    if mode == "fsdp":
        extra = {"fsdp": "full_shard auto_wrap", "fsdp_config": {"use_orig_params": True}}
    return extra
