"""The `grpo:` section of params.yaml: pair building, the preference method and its trainer settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from safetyvlm.config import from_section
from safetyvlm.prefs.rewards import REWARD_NAMES

METHODS = ("dpo", "grpo")


def _weights() -> dict[str, float]:
    return {"json_validity": 1.0, "detection_quality": 1.0, "safety_grounding": 1.0, "format_length": 0.5}


@dataclass
class PairsConfig:
    images: int | None = 120        # train-split images to answer twice (None: all)
    margin: float = 0.02            # keep a pair only if chosen's total beats rejected's by this much
    batch_size: int = 25
    max_new_tokens: int = 400
    weights: dict[str, float] = field(default_factory=_weights)


@dataclass
class DPOParams:
    beta: float = 0.1
    loss_type: str = "sigmoid"
    steps: int = 20                 # few pairs pass the margin: short and gentle, or it overfits them
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 5e-5                # 5e-4 for 40 steps collapsed the Qwen finetune (empty answers)


@dataclass
class GRPOParams:
    steps: int = 20
    batch_size: int = 8              # completions per step (a multiple of num_generations)
    num_generations: int = 4
    max_completion_length: int = 400
    temperature: float = 1.0
    beta: float = 0.0                # KL to the reference; 0 = no reference model (TRL's default)
    lr: float = 5e-4
    prompts: int | None = 200        # train-split images used as prompts (None: all)
    weights: dict[str, float] = field(default_factory=_weights)


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
