"""Preference training on top of a fine-tuned model: TRL's DPOTrainer on the pairs, or GRPOTrainer
with the verifiable rewards of `rewards.py`. Both add a LoRA adapter with the finetune's family and
strategy patterns (`lora.py`), load through the one loader (same backend rules as the finetune), and
save the adapter, the merged model with its processor, the training log and metrics.

Under torchrun (`finetune.distributed: ddp | fsdp`, the grpo stage relaunches itself like the finetune)
the Trainer runs the method across ranks and only rank 0 writes (`model/distributed.py`).

DPO's reference model is the fine-tuned model itself: with a PEFT adapter TRL disables the adapter to
get the reference log-probabilities, so no second copy is held in memory.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from safetyvlm.prefs.config import PrefsConfig
from safetyvlm.prefs.rewards import AnswerScorer

log = logging.getLogger("safetyvlm.prefs")

# keys kept from TRL's log history (whichever the method logs)
LOG_KEYS = ("loss", "reward", "reward_std", "rewards/chosen", "rewards/rejected", "rewards/margins",
            "rewards/accuracies", "completions/mean_length")


def grpo_dataset(split, limit: int | None = None):
    """Train rows -> GRPO prompts: the inference prompt (no passages) + ground truth for the rewards."""
    from safetyvlm.model.prompts import build_messages

    if limit is not None:
        split = split.select(range(min(limit, len(split))))

    def to_prompt(row):
        return {"image": row["image"], "prompt": build_messages(),
                "instances": [{"name": t["name"], "bbox_2d": [float(v) for v in t["bbox_2d"]]}
                              for t in row["instances"]],
                "image_size": list(row["image"].size)}

    return split.map(to_prompt, remove_columns=[c for c in split.column_names if c != "image"],
                     keep_in_memory=True)


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


def _common_args(cfg: PrefsConfig, out: Path, cuda: bool, gradient_checkpointing: bool = False,
                 distributed: str = "none") -> dict:
    from safetyvlm.model.distributed import trainer_args

    return dict(output_dir=str(out / "trainer"), logging_steps=cfg.log_every, save_strategy="no",
                report_to=[], use_cpu=not cuda, bf16=cuda, seed=cfg.seed, lr_scheduler_type=cfg.lr_scheduler,
                warmup_steps=cfg.warmup_steps,
                dataloader_num_workers=0, disable_tqdm=True, gradient_checkpointing=gradient_checkpointing,
                **trainer_args(distributed))


def _history(trainer) -> list[dict]:
    out = []
    for h in trainer.state.log_history:
        row = {k: h[k] for k in LOG_KEYS if k in h}
        row.update({k: v for k, v in h.items() if k.startswith("rewards/") and k.endswith("/mean")})
        if row and "train_runtime" not in h:
            out.append({"step": h["step"], **row})
    return out


def train_preferences(model_dir: str | Path, family: str, cfg: PrefsConfig, out_dir: str | Path, *,
                      pairs=None, train_split=None, backend: str = "auto", load_in_4bit: bool = False,
                      gradient_checkpointing: bool = False, distributed: str = "none",
                      live_dir: str | Path | None = None) -> dict:
    """Run `cfg.method` on the model in `model_dir`; write `out_dir/{adapter,merged,train_log.json,
    metrics.json,config.json}` atomically and return the metrics.

    `pairs`: the grpo-pairs dataset (dpo); `train_split`: the dataset's train split (grpo prompts).
    `distributed`: none | ddp | fsdp, when run under torchrun (only rank 0 writes; others return {}).
    `live_dir`: the DVCLive directory of the training curves (loss, reward margin or reward).
    """
    import torch

    from safetyvlm.live import trainer_callbacks
    from safetyvlm.model import distributed as dist
    from safetyvlm.model.loader import load_model
    from safetyvlm.model.lora import count_lora_layers, make_lora_config

    torch.manual_seed(cfg.seed)
    cuda = torch.cuda.is_available()
    model, processor, info = load_model(model_dir, family=family, backend=backend, load_in_4bit=load_in_4bit,
                                        dtype="bfloat16" if cuda else "float32")
    peft_config = make_lora_config(family, cfg.strategy, cfg.r, cfg.alpha, 0.0)
    if family == "mllama":
        if cfg.method == "grpo":
            raise NotImplementedError(
                "grpo.method=grpo is not available for Mllama: TRL 1.16's GRPOTrainer does not pass Mllama's "
                "aspect_ratio_ids / aspect_ratio_mask to the model when it scores completions "
                "(ValueError: `aspect_ratio_ids` must be provided); use grpo.method=dpo for Mllama")
        extend_cross_attention_mask(model)
        if gradient_checkpointing:
            from safetyvlm.model.memory import checkpoint_mllama_vision

            checkpoint_mllama_vision(model)  # transformers' checkpointing skips the vision layers (memory.py)
    if cfg.method == "dpo" and (pairs is None or len(pairs) == 0):
        return _no_pairs(model_dir, family, cfg, out_dir, info) if dist.is_main_process() else {}
    with dist.output_dir(out_dir) as tmp:
        start = time.perf_counter()
        if cfg.method == "dpo":
            trainer, data_info = _dpo(model, processor, cfg, pairs, peft_config, tmp, cuda, gradient_checkpointing,
                                      distributed)
        else:
            trainer, data_info = _grpo(model, processor, family, cfg, train_split, peft_config, tmp, cuda,
                                       gradient_checkpointing, distributed)
        if dist.is_main_process():
            for callback in trainer_callbacks(live_dir):
                trainer.add_callback(callback)
        lora_layers = count_lora_layers(trainer.model)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        trainer.train()
        seconds = time.perf_counter() - start
        history = _history(trainer)

        dist.save_adapter_and_merged(trainer, tmp, model_dir, family)
        if not dist.is_main_process():
            return {}
        processor.save_pretrained(tmp / "merged")
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        first = next((h for h in history if "loss" in h), {})
        last = next((h for h in reversed(history) if "loss" in h), {})
        metrics = {
            "family": family, "method": cfg.method, "strategy": cfg.strategy, "start_model": str(model_dir),
            "backend": info["backend"], "device": info["device"], "trainable_parameters": trainable,
            "lora_layers": lora_layers, "trained": True, "distributed": distributed,
            "world_size": dist.world_size(), "train_seconds": round(seconds, 1), **data_info,
            "first": first, "last": last,
        }
        (tmp / "train_log.json").write_text(json.dumps(history, indent=1) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (tmp / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return metrics


def _no_pairs(model_dir, family: str, cfg: PrefsConfig, out_dir, info: dict) -> dict:
    """No pair passed the margin: there is nothing to prefer, so the final model is the fine-tuned one,
    copied unchanged, and the metrics say so (`trained: false`) instead of pretending a DPO run."""
    from safetyvlm.io import atomic_output_dir

    log.warning("%s: the grpo-pairs stage kept no pairs; the final model is %s unchanged", family, model_dir)
    metrics = {"family": family, "method": cfg.method, "strategy": cfg.strategy, "start_model": str(model_dir),
               "backend": info["backend"], "device": info["device"], "trained": False,
               "reason": "no preference pair passed grpo.pairs.margin (see metrics/pairs)", "pairs": 0,
               "train_seconds": 0.0, "first": {}, "last": {}}
    with atomic_output_dir(out_dir) as tmp:
        shutil.copytree(model_dir, tmp / "merged")
        (tmp / "train_log.json").write_text("[]\n")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (tmp / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return metrics


def _dpo(model, processor, cfg: PrefsConfig, pairs, peft_config, out: Path, cuda: bool, ckpt: bool = False,
         distributed: str = "none"):
    from trl import DPOConfig, DPOTrainer

    p = cfg.dpo  # empty pairs never get here: train_preferences copies the model instead (_no_pairs)
    train = pairs.select_columns(["images", "prompt", "chosen", "rejected"])
    args = DPOConfig(max_steps=p.steps, per_device_train_batch_size=p.batch_size,
                     gradient_accumulation_steps=p.grad_accum, learning_rate=p.lr, beta=p.beta,
                     loss_type=[p.loss_type], max_length=None, **_common_args(cfg, out, cuda, ckpt, distributed))
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=processor,
                         peft_config=peft_config)
    return trainer, {"pairs": len(pairs), "steps": p.steps}


def _grpo(model, processor, family: str, cfg: PrefsConfig, train_split, peft_config, out: Path, cuda: bool,
          ckpt: bool = False, distributed: str = "none"):
    from trl import GRPOConfig, GRPOTrainer

    from safetyvlm.kb import load_kb
    from safetyvlm.model.boxes import model_frame

    if train_split is None:
        raise ValueError("grpo.method=grpo needs the dataset's train split for its prompts")
    g = cfg.grpo
    scorer = AnswerScorer(model_frame(family, processor), load_kb(), g.weights,
                          max_chars=4 * g.max_completion_length)
    prompts = grpo_dataset(train_split, g.prompts)
    args = GRPOConfig(max_steps=g.steps, per_device_train_batch_size=g.batch_size,
                      num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                      temperature=g.temperature, beta=g.beta, learning_rate=g.lr,
                      reward_weights=scorer.active_weights(), **_common_args(cfg, out, cuda, ckpt, distributed))
    trainer = GRPOTrainer(model=model, reward_funcs=scorer.reward_functions(), args=args,
                          train_dataset=prompts, processing_class=processor, peft_config=peft_config)
    return trainer, {"prompts": len(prompts), "steps": g.steps}
