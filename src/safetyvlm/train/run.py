"""The LoRA training run under every algorithm: `sft.py`, `dpo.py` and `grpo.py` are each a config and a TRL
trainer over it, like TRL's one config and one trainer per algorithm.

`LoraRun.train()` seeds, loads the start model through the one loader, attaches LoRA with the family's
patterns for the strategy (`model.lora`), applies the Mllama gradient-checkpointing fix (`model.memory`),
trains the algorithm's trainer in an atomic output directory (`distributed.output_dir`) and writes there:

    adapter/          the trained LoRA
    merged/           start model + adapter merged, with the processor: what the next stage loads
    train_log.json    the logged steps (loss; DPO's rewards; GRPO's reward), also DVCLive curves in `live_dir`
    metrics.json      what the run reports (`metrics`)
    config.json       the config it ran with (`config_record`)

Under torchrun (`distributed.py`) every rank trains and only rank 0 writes. An algorithm builds its trainer
(`build_trainer`) and says what it reports; `PreferenceRun` is what DPO and GRPO share on top.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path

from safetyvlm.live import trainer_callbacks
from safetyvlm.model.lora import count_lora_layers, make_lora_config
from safetyvlm.model.memory import checkpoint_mllama_vision
from safetyvlm.train import distributed as dist

log = logging.getLogger("safetyvlm.train")

# keys kept from TRL's log history (whichever the algorithm logs)
LOG_KEYS = ("loss", "reward", "reward_std", "rewards/chosen", "rewards/rejected", "rewards/margins",
            "rewards/accuracies", "completions/mean_length")


def logged_steps(trainer) -> list[dict]:
    """The logged training steps: `LOG_KEYS` and GRPO's per-reward means, without the closing summary."""
    out = []
    for h in trainer.state.log_history:
        row = {k: h[k] for k in LOG_KEYS if k in h}
        row.update({k: v for k, v in h.items() if k.startswith("rewards/") and k.endswith("/mean")})
        if row and "train_runtime" not in h:
            out.append({"step": h["step"], **row})
    return out


class LoraRun(ABC):
    """One LoRA run from `start_model` into `out_dir`; see the module docstring. Subclasses build the trainer."""

    # True: the run attaches LoRA itself before the trainer exists (SFT: the adapter's initial weights follow
    # the seed and the load, as they always did); False: TRL's trainer attaches `lora_config` (DPO, whose
    # reference model is then the start model with the adapter switched off, and GRPO)
    attach_lora_first = False

    def __init__(self, start_model, family: str, out_dir, *, strategy: str, r: int, alpha: int, dropout: float = 0.0,
                 seed: int = 0, backend: str = "auto", load_in_4bit: bool = False, gradient_checkpointing: bool = False,
                 distributed: str = "none", live_dir: str | Path | None = None, lora_extra: dict | None = None):
        self.start_model, self.family, self.out_dir, self.strategy = start_model, family, out_dir, strategy
        self.seed, self.backend, self.load_in_4bit = seed, backend, load_in_4bit
        self.gradient_checkpointing, self.distributed, self.live_dir = gradient_checkpointing, distributed, live_dir
        self.lora_config = make_lora_config(family, strategy, r, alpha, dropout, **(lora_extra or {}))
        self.resume = None  # a Trainer checkpoint to resume from (SFT sets it)

    # ------------------------------------------------------------------------------ the algorithm's part
    @abstractmethod
    def build_trainer(self, model, out: Path):
        """(the TRL trainer over `model`, a dict of what it trains on for the metrics); `out`: the output dir."""

    @abstractmethod
    def metrics(self, run: dict, data: dict, steps: list[dict], merged) -> dict:
        """metrics.json: from the run (`run`: backend, device, trainable_parameters, lora_layers, distributed,
        world_size, train_seconds), what `build_trainer` said it trains on (`data`), the logged steps and the
        merged model."""

    @abstractmethod
    def config_record(self) -> dict:
        """config.json: the config the run was made with."""

    def prepare(self, model):
        """The loaded start model before LoRA and training; a subclass patches it here."""
        return model

    def save_merged_extras(self, merged_dir: Path) -> None:
        """Anything beside the merged weights and processor (rank 0)."""

    def finish(self) -> None:
        """After rank 0 put the outputs in place."""

    # ------------------------------------------------------------------------------------- the run
    def load(self):
        """Seed, then load the start model through the one loader (bf16 on CUDA); keeps its processor and info."""
        import torch

        from safetyvlm.model.loader import load_model

        torch.manual_seed(self.seed)
        self.cuda = torch.cuda.is_available()
        model, self.processor, self.info = load_model(
            self.start_model, family=self.family, backend=self.backend, load_in_4bit=self.load_in_4bit,
            dtype="bfloat16" if self.cuda else "float32")
        log.info("start model %s: backend %s (%s)", self.start_model, self.info["backend"], self.info["backend_reason"])
        return model

    def trainer_args(self, out: Path, **kw) -> dict:
        """The TrainingArguments every algorithm shares, updated with the algorithm's own `kw`."""
        args = dict(output_dir=str(out / "trainer"), report_to=[], use_cpu=not self.cuda, bf16=self.cuda,
                    seed=self.seed, dataloader_num_workers=0, disable_tqdm=True,
                    gradient_checkpointing=self.gradient_checkpointing, **dist.trainer_args(self.distributed))
        return {**args, **kw}

    def train(self) -> dict:
        """Train and write `out_dir` (rank 0); returns the metrics (other ranks: their rank and last loss)."""
        model = self.prepare(self.load())
        if self.attach_lora_first:
            from peft import get_peft_model

            model = get_peft_model(model, self.lora_config)
        if self.family == "mllama" and self.gradient_checkpointing:
            checkpoint_mllama_vision(model)  # transformers' checkpointing skips the vision layers (model/memory.py)
        with dist.output_dir(self.out_dir) as out:
            trainer, data = self.build_trainer(model, out)
            if dist.is_main_process():
                for callback in trainer_callbacks(self.live_dir):
                    trainer.add_callback(callback)
            lora_layers = count_lora_layers(trainer.model)
            trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            start = time.perf_counter()
            trainer.train(resume_from_checkpoint=self.resume)
            seconds = time.perf_counter() - start
            steps = logged_steps(trainer)

            merged = dist.save_adapter_and_merged(trainer, out, self.start_model, self.family)
            if not dist.is_main_process():  # rank 0 writes everything; the others are done
                losses = [h["loss"] for h in steps if "loss" in h]
                return {"rank": dist.rank(), "final_loss": losses[-1] if losses else None}
            self.processor.save_pretrained(out / "merged")
            self.save_merged_extras(out / "merged")
            shutil.rmtree(out / "trainer", ignore_errors=True)
            run = {"backend": self.info["backend"], "device": self.info["device"], "trainable_parameters": trainable,
                   "lora_layers": lora_layers, "distributed": self.distributed, "world_size": dist.world_size(),
                   "train_seconds": round(seconds, 1)}
            metrics = self.metrics(run, data, steps, merged)
            write_records(out, steps, metrics, self.config_record())
        self.finish()
        return metrics


def write_records(out: Path, steps: list[dict], metrics: dict, config: dict) -> None:
    (out / "train_log.json").write_text(json.dumps(steps, indent=1) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def extend_cross_attention_mask(model) -> None:
    """Mllama only: let completion tokens see the image in TRL's preference forward passes.

    TRL 1.16 builds Mllama's `cross_attention_mask` for the prompt alone and then appends the
    completion tokens, so the mask is shorter than `input_ids` (a shape error in the first cross-attention
    layer). This pre-hook repeats the mask's last position over the appended tokens, which is what
    Mllama's own `generate` does for every generated token.
    """
    import torch

    def hook(module, args, kwargs):
        mask, ids = kwargs.get("cross_attention_mask"), kwargs.get("input_ids")
        if mask is not None and ids is not None and mask.shape[1] < ids.shape[1]:
            extra = mask[:, -1:].expand(-1, ids.shape[1] - mask.shape[1], *mask.shape[2:])
            kwargs["cross_attention_mask"] = torch.cat([mask, extra], dim=1)
        return args, kwargs

    model.register_forward_pre_hook(hook, with_kwargs=True)


class PreferenceRun(LoraRun):
    """What DPO and GRPO share: the `grpo:` section (`preferences.PrefsConfig`) with the hardware settings of
    the finetune, the Mllama cross-attention fix, and one metrics layout."""

    method = ""

    def __init__(self, model_dir, family: str, cfg, out_dir, *, backend: str = "auto",
                 load_in_4bit: bool = False, gradient_checkpointing: bool = False, distributed: str = "none",
                 live_dir: str | Path | None = None):
        super().__init__(model_dir, family, out_dir, strategy=cfg.strategy, r=cfg.r, alpha=cfg.alpha, seed=cfg.seed,
                         backend=backend, load_in_4bit=load_in_4bit, gradient_checkpointing=gradient_checkpointing,
                         distributed=distributed, live_dir=live_dir)
        self.cfg = cfg

    def prepare(self, model):
        if self.family == "mllama":
            extend_cross_attention_mask(model)
        return model

    def trainer_args(self, out: Path, **kw) -> dict:
        cfg = self.cfg
        return super().trainer_args(out, logging_steps=cfg.log_every, save_strategy="no",
                                    lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_steps, **kw)

    def metrics(self, run: dict, data: dict, steps: list[dict], merged) -> dict:
        first = next((h for h in steps if "loss" in h), {})
        last = next((h for h in reversed(steps) if "loss" in h), {})
        return {"family": self.family, "method": self.method, "strategy": self.cfg.strategy,
                "start_model": str(self.start_model), "backend": run["backend"], "device": run["device"],
                "trainable_parameters": run["trainable_parameters"], "lora_layers": run["lora_layers"],
                "trained": True, "distributed": run["distributed"], "world_size": run["world_size"],
                "train_seconds": run["train_seconds"], **data, "first": first, "last": last}

    def config_record(self) -> dict:
        return asdict(self.cfg)
