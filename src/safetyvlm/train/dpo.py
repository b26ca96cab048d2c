"""DPO on the grpo-pairs stage's pairs (chosen: the answer with retrieval, rejected: without) with TRL's
`DPOTrainer`: its config (`grpo.dpo`) and its run over the LoRA skeleton (`run.py`).

The reference model is the start model itself: with a PEFT adapter TRL disables the adapter to get the
reference log-probabilities, so no second copy is held in memory.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from safetyvlm.io import atomic_output_dir
from safetyvlm.live import open_live
from safetyvlm.train import distributed as dist
from safetyvlm.train.run import PreferenceRun, write_records

log = logging.getLogger("safetyvlm.prefs")


@dataclass
class DPOParams:
    beta: float = 0.1
    loss_type: str = "sigmoid"
    steps: int = 20                 # few pairs pass the margin: short and gentle, or it overfits them
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 5e-5                # 5e-4 for 40 steps collapsed the Qwen finetune (empty answers)


class DPORun(PreferenceRun):
    """`pairs`: the grpo-pairs dataset (images, prompt, chosen, rejected)."""

    method = "dpo"

    def __init__(self, model_dir, family: str, cfg, out_dir, pairs, **kw):
        super().__init__(model_dir, family, cfg, out_dir, **kw)
        self.pairs = pairs

    def build_trainer(self, model, out: Path):
        from trl import DPOConfig, DPOTrainer

        p = self.cfg.dpo
        train = self.pairs.select_columns(["images", "prompt", "chosen", "rejected"])
        args = DPOConfig(max_steps=p.steps, per_device_train_batch_size=p.batch_size,
                         gradient_accumulation_steps=p.grad_accum, learning_rate=p.lr, beta=p.beta,
                         loss_type=[p.loss_type], max_length=None, **self.trainer_args(out))
        trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=self.processor,
                             peft_config=self.lora_config)
        return trainer, {"pairs": len(self.pairs), "steps": p.steps}

    def train(self) -> dict:
        if self.pairs is not None and len(self.pairs):
            return super().train()
        self.load()  # the record names the backend and device it would have trained on
        return self.keep_start_model() if dist.is_main_process() else {}

    def keep_start_model(self) -> dict:
        """No pair passed the margin: there is nothing to prefer, so the final model is the start model, copied
        unchanged, and the metrics say so (`trained: false`) instead of pretending a DPO run."""
        cfg = self.cfg
        log.warning("%s: the grpo-pairs stage kept no pairs; the final model is %s unchanged", self.family,
                    self.start_model)
        metrics = {"family": self.family, "method": cfg.method, "strategy": cfg.strategy,
                   "start_model": str(self.start_model), "backend": self.info["backend"], "device": self.info["device"],
                   "trained": False, "reason": "no preference pair passed grpo.pairs.margin (see metrics/pairs)",
                   "pairs": 0, "train_seconds": 0.0, "first": {}, "last": {}}
        with atomic_output_dir(self.out_dir) as out:
            shutil.copytree(self.start_model, out / "merged")
            write_records(out, [], metrics, asdict(cfg))
        if self.live_dir is not None:  # no curves, but the stage's DVCLive output exists and says why
            live = open_live(self.live_dir)
            live.summary.update({"trained": False, "pairs": 0})
            live.end()
        return metrics
