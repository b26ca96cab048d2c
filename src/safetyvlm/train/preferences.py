"""The preference stage (`grpo`): its params section (`PrefsConfig`, params.yaml `grpo:`) and the run its
`method` picks: DPO on the grpo-pairs stage's pairs (`dpo.py`) or GRPO with the verifiable rewards (`grpo.py`),
both on top of the finetune of `strategy` of each family, each a TRL config and trainer over the LoRA skeleton.

Under torchrun (`finetune.distributed: ddp | fsdp`, the grpo stage relaunches itself like the finetune) the
Trainer runs the method across ranks and only rank 0 writes (`distributed.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safetyvlm.config import from_section
from safetyvlm.prefs.pairs import PairsConfig
from safetyvlm.prefs.rewards import REWARD_NAMES
from safetyvlm.train.dpo import DPOParams, DPORun
from safetyvlm.train.grpo import GRPOParams, GRPORun

RUNS = {"dpo": DPORun, "grpo": GRPORun}
METHODS = tuple(RUNS)


@dataclass
class PrefsConfig:
    method: str = "dpo"              # dpo | grpo
    strategy: str = "vision_language"  # the finetune (per family) the preference stage starts from
    r: int = 16
    alpha: int = 32
    seed: int = 0
    log_every: int = 2
    lr_scheduler: str = "constant"   # transformers' lr_scheduler_type for DPO and GRPO
    warmup_steps: int = 0
    pairs: PairsConfig = field(default_factory=PairsConfig)
    dpo: DPOParams = field(default_factory=DPOParams)
    grpo: GRPOParams = field(default_factory=GRPOParams)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"grpo.method must be one of {', '.join(METHODS)}; got {self.method!r}")
        for where, weights in (("grpo.pairs.weights", self.pairs.weights), ("grpo.grpo.weights", self.grpo.weights)):
            unknown = set(weights) - set(REWARD_NAMES)
            if unknown:
                raise ValueError(f"{where}: unknown rewards {sorted(unknown)}; known: {', '.join(REWARD_NAMES)}")
        if self.grpo.batch_size % self.grpo.num_generations:
            raise ValueError(f"grpo.grpo.batch_size ({self.grpo.batch_size}) must be a multiple of "
                             f"num_generations ({self.grpo.num_generations})")

    @classmethod
    def from_dict(cls, d: dict | None) -> "PrefsConfig":
        d = dict(d or {})
        subs = {"pairs": PairsConfig, "dpo": DPOParams, "grpo": GRPOParams}
        nested = {k: from_section(c, d.pop(k) or {}, f"grpo.{k}") for k, c in subs.items() if k in d}
        return from_section(cls, {**d, **nested}, "grpo")


def train_preferences(model_dir: str | Path, family: str, cfg: PrefsConfig, out_dir: str | Path, *,
                      pairs=None, train_split=None, backend: str = "auto", load_in_4bit: bool = False,
                      gradient_checkpointing: bool = False, distributed: str = "none",
                      live_dir: str | Path | None = None) -> dict:
    """Run `cfg.method` on the model in `model_dir`; write `out_dir/{adapter,merged,train_log.json,
    metrics.json,config.json}` atomically and return the metrics.

    `pairs`: the grpo-pairs dataset (dpo); `train_split`: the dataset's train split (grpo prompts).
    `distributed`: none | ddp | fsdp, when run under torchrun (only rank 0 writes).
    `live_dir`: the DVCLive directory of the training curves (loss, reward margin or reward).
    """
    data = pairs if cfg.method == "dpo" else train_split
    run = RUNS[cfg.method](model_dir, family, cfg, out_dir, data, backend=backend, load_in_4bit=load_in_4bit,
                           gradient_checkpointing=gradient_checkpointing, distributed=distributed, live_dir=live_dir)
    return run.train()
