"""GRPO with the verifiable rewards of `prefs/rewards.py` and TRL's `GRPOTrainer`: its config (`grpo.grpo`)
and its run over the LoRA skeleton (`run.py`). The prompts are the train split's images with the inference
prompt (no passages); the rewards read the ground truth from the same rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safetyvlm.kb import load_kb
from safetyvlm.model.boxes import model_frame
from safetyvlm.model.prompts import build_messages
from safetyvlm.prefs.rewards import AnswerScorer, default_weights
from safetyvlm.train.run import PreferenceRun


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
    weights: dict[str, float] = field(default_factory=default_weights)


def grpo_dataset(split, limit: int | None = None):
    """Train rows -> GRPO prompts: the inference prompt (no passages) + ground truth for the rewards."""
    if limit is not None:
        split = split.select(range(min(limit, len(split))))

    def to_prompt(row):
        return {"image": row["image"], "prompt": build_messages(),
                "instances": [{"name": t["name"], "bbox_2d": [float(v) for v in t["bbox_2d"]]}
                              for t in row["instances"]],
                "image_size": list(row["image"].size)}

    return split.map(to_prompt, remove_columns=[c for c in split.column_names if c != "image"],
                     keep_in_memory=True)


class GRPORun(PreferenceRun):
    """`train_split`: the dataset's train split (the prompts and their ground truth)."""

    method = "grpo"

    def __init__(self, model_dir, family: str, cfg, out_dir, train_split, **kw):
        if family == "mllama":
            raise NotImplementedError(
                "grpo.method=grpo is not available for Mllama: TRL 1.16's GRPOTrainer does not pass Mllama's "
                "aspect_ratio_ids / aspect_ratio_mask to the model when it scores completions "
                "(ValueError: `aspect_ratio_ids` must be provided); use grpo.method=dpo for Mllama")
        if train_split is None:
            raise ValueError("grpo.method=grpo needs the dataset's train split for its prompts")
        super().__init__(model_dir, family, cfg, out_dir, **kw)
        self.train_split = train_split

    def build_trainer(self, model, out: Path):
        from trl import GRPOConfig, GRPOTrainer

        g = self.cfg.grpo
        scorer = AnswerScorer(model_frame(self.family, self.processor), load_kb(), g.weights,
                              max_chars=4 * g.max_completion_length)
        prompts = grpo_dataset(self.train_split, g.prompts)
        args = GRPOConfig(max_steps=g.steps, per_device_train_batch_size=g.batch_size,
                          num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                          temperature=g.temperature, beta=g.beta, learning_rate=g.lr,
                          reward_weights=scorer.active_weights(), **self.trainer_args(out))
        trainer = GRPOTrainer(model=model, reward_funcs=scorer.reward_functions(), args=args,
                              train_dataset=prompts, processing_class=self.processor, peft_config=self.lora_config)
        return trainer, {"prompts": len(prompts), "steps": g.steps}
