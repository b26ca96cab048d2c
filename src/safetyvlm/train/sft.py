"""LoRA finetuning of a base VLM on the dataset's full safety reports with TRL's SFTTrainer: its config (the
`finetune:` section) and its run over the LoRA skeleton (`run.py`).

Strategies (`model/lora.py`): `vision`, `language`, `vision_language`. Backends (`loader.choose_backend`):
`hf` (transformers + PEFT; on a GPU optionally 4-bit NF4 and gradient checkpointing) or `unsloth`
where installed with a GPU. Samples use TRL's `messages` form with `assistant_only_loss=True`, so the
loss is on the answer only (TRL's prompt/completion form mislabels Mllama: see tests).
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from safetyvlm.answer.plain import predict_reports
from safetyvlm.config import from_section
from safetyvlm.data.dataset import load_dataset_dir
from safetyvlm.eval.detection import UNKNOWN, DetectionScores, match_image
from safetyvlm.eval.safety import SafetyAgreement
from safetyvlm.model.boxes import model_frame
from safetyvlm.model.fast_path import compile_blocks, use_packed_vision_attention
from safetyvlm.model.presets import PRESET_FILE
from safetyvlm.model.prompts import assistant_message, build_messages, detection_text, prompt_text, target_text
from safetyvlm.schema import CATEGORIES, SafetyReport
from safetyvlm.train.distributed import MODES
from safetyvlm.train.run import LoraRun

log = logging.getLogger("safetyvlm.finetune")


@dataclass
class FinetuneConfig:
    """The `finetune:` section of params.yaml (family and strategy come from the stage matrix)."""

    backend: str = "auto"  # auto | hf | unsloth
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    lr: float = 2e-3
    steps: int = 150
    batch_size: int = 8
    grad_accum: int = 1
    warmup_steps: int = 5
    lr_scheduler: str = "cosine"  # transformers' lr_scheduler_type: linear | cosine | constant | ...
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    load_in_4bit: bool = False  # GPU only (bitsandbytes)
    gradient_checkpointing: bool = False
    # torch.compile each decoder layer and vision block on its own (model/fast_path.compile_blocks): on an
    # H100 the 7B's bf16 LoRA step went 0.70 -> 0.49 s (38% MFU) after a 69 s first step (docs/gpu.md). Off
    # by default: for the tiny CPU models the compile time (~50 s) outweighs 150 steps' gain.
    compile: bool = False
    # TRL's activation offloading: the activations saved for backward wait in CPU memory (a GPU memory saving
    # for 4-bit runs; pair with gradient_checkpointing)
    activation_offloading: bool = False
    optim: str | None = None  # transformers' optimizer name (e.g. paged_adamw_8bit); None: the Trainer's default
    train_images: int | None = None  # None: the whole train split
    eval_images: int = 50  # valid split images scored after training (0: skip)
    eval_batch_size: int = 25
    max_new_tokens: int = 400
    log_every: int = 5
    # Also train the output layer in full (PEFT modules_to_save). The tiny bases never emitted the
    # safety vocabulary (their task was names + boxes), so its lm_head rows say "never": LoRA on the
    # towers alone cannot lift them in a few hundred steps (loss stayed > 7; measured). A hub
    # checkpoint already knows English: leave this off there.
    train_lm_head: bool = True
    # Divide the base's output layer by this before training (greedy answers unchanged: the argmax is).
    # A base trained long on a small corpus is certain of its own wording: the knowledge base's phrases
    # cost it ~9 nats a token, and 3 brings that to ~5 (measured on the shipped bases), so the first steps
    # teach the wording instead of undoing certainty. 1: off.
    lm_head_temperature: float = 1.0
    # The fully trained output layer learns at lr * this (Adam moves every weight that sees a gradient by
    # about lr a step, the class names' rows as fast as the new wording's). 1: the LoRA's lr; at 0.1 the
    # wording is not learned in 150 steps (JSON valid 0.24, docs/finetune-recipe.md run J).
    lm_head_lr_scale: float = 1.0
    # Share of train samples whose prompt carries passages retrieved (rag-index) for the sample's own
    # tools, with those passages' ids as the target's `sources`: the model learns to read and cite
    # context. 0 (no retriever is loaded): those passages name the answer's tools, the model learns to
    # copy them, and its plain answers name fewer of the image's classes (runs G and M).
    rag_fraction: float = 0.0
    # Share of the other train samples asked the detect prompt (names and boxes only, the base's own
    # task) instead of the report: replay of the base task while the report's wording is learned.
    # 0: off (at 0.3 no better, run L).
    detect_fraction: float = 0.0
    # A passage of each of this many other categories joins a retrieval sample's own (shuffled), so the
    # passages no longer give the answer's names away. 0: off (at 2 the plain answers were no better, run N).
    rag_distractors: int = 0
    # Batch samples of similar length together (transformers' group_by_length sampler): at random a
    # batch of 8 is ~24% padding (1 to 3 tools make answers of very different lengths), grouped ~1%, and
    # the 150 steps train in ~0.65x the time with valid-split answers as good within noise (runs AC-AG).
    # Always on when some samples carry passages (several times longer).
    group_by_length: bool = True
    # none | ddp | fsdp: run the stage under torchrun with `processes` ranks (train/distributed.py)
    distributed: str = "none"
    processes: int | None = None  # None: every GPU, or 2 CPU processes
    # save a resumable Trainer checkpoint every N steps into `<out_dir>.checkpoints/` (0: never); an
    # interrupted run resumes from the last one, and a finished run deletes them
    checkpoint_every: int = 0

    def __post_init__(self):
        if self.lm_head_temperature <= 0:
            raise ValueError(f"finetune.lm_head_temperature must be > 0, got {self.lm_head_temperature}")
        if self.lm_head_lr_scale <= 0:
            raise ValueError(f"finetune.lm_head_lr_scale must be > 0, got {self.lm_head_lr_scale}")
        if self.rag_distractors < 0:
            raise ValueError(f"finetune.rag_distractors must be >= 0, got {self.rag_distractors}")
        for name in ("rag_fraction", "detect_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"finetune.{name} must be within [0, 1], got {getattr(self, name)}")
        if self.distributed not in MODES:
            raise ValueError(f"finetune.distributed must be one of {', '.join(MODES)}; got {self.distributed!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        return from_section(cls, d, "finetune")


def report_of(instances: list[dict]) -> SafetyReport:
    return SafetyReport.model_validate(
        {"tools": [{k: v for k, v in inst.items()} for inst in instances]}
    )


def sft_dataset(split, processor, family: str, limit: int | None = None, *, retriever=None,
                rag_fraction: float = 0.0, detect_fraction: float = 0.0, rag_distractors: int = 0, seed: int = 0):
    """Dataset rows -> TRL `messages` samples: the one prompt, the target in the model's box frame.

    With a `retriever`, a seeded `rag_fraction` of the rows get the passages it returns for the row's
    ground-truth tools in their prompt (as at inference, where the first pass's tools drive retrieval),
    and each tool's `sources` in the target are the ids of its own passages among them. `length` (the
    prompt + target characters) lets the trainer batch long and short samples apart. A seeded
    `detect_fraction` of the rows without passages are asked the detect prompt, answered with names and
    boxes only. `rag_distractors`: passages of that many other categories join each retrieval sample's.
    """
    frame = model_frame(family, processor)
    if limit is not None:
        split = split.select(range(min(limit, len(split))))
    rng = random.Random(seed)
    use_rag = [retriever is not None and rng.random() < rag_fraction for _ in range(len(split))]
    detect_rng = random.Random(f"detect-{seed}")  # its own stream: the rows with passages stay the same
    detect = [detect_rng.random() < detect_fraction and not r for r in use_rag]
    cache: dict[tuple[str, ...], list] = {}

    def passages_for(tools: list[str], idx: int):
        key = tuple(dict.fromkeys(tools))
        if key not in cache:
            cache[key] = retriever.retrieve(list(key))
        if not rag_distractors:
            return cache[key]
        # one passage of each of `rag_distractors` other categories, the whole set shuffled
        pick = random.Random(f"distract-{seed}-{idx}")
        others = pick.sample([c for c in CATEGORIES if c not in key], rag_distractors)
        passages = cache[key] + [retriever.retrieve([c], k=1)[0] for c in others]
        pick.shuffle(passages)
        return passages

    def to_sample(row, idx):
        image = row["image"]
        report = report_of(row["instances"])
        if detect[idx]:
            target = detection_text(row["instances"], image.size, frame)
            return {"images": [image], "messages": build_messages(task="detect") + [assistant_message(target)],
                    "length": len(prompt_text(task="detect")) + len(target), "with_passages": False}
        passages = None
        if use_rag[idx]:
            retrieved = passages_for([t.name for t in report.tools], idx)
            for tool in report.tools:
                tool.sources = [p.id for p in retrieved if p.category == tool.name]
            passages = [p.as_prompt_passage() for p in retrieved]
        target = target_text(report, image.size, frame, with_sources=passages is not None)
        return {"images": [image], "messages": build_messages(passages) + [assistant_message(target)],
                "length": len(prompt_text(passages)) + len(target), "with_passages": passages is not None}

    # keep_in_memory: a cache file would land inside data/dataset (a DVC output) and change its hash
    return split.map(to_sample, with_indices=True, remove_columns=split.column_names, keep_in_memory=True)


def sft_trainer_class(cuda: bool):
    """TRL's SFTTrainer on a GPU; elsewhere one whose loss is the model's own cross-entropy over full logits.

    TRL computes the SFT loss through a chunked fused output layer (`trl.kernels.chunked_logprob`): a Triton
    kernel on a GPU, that never holds a 7B model's full logits; elsewhere a tile-by-tile torch loop that also
    works out entropy and top-1 for TRL's logs. For the tiny models on 2 CPU cores that loop was half of
    each step (cProfile: 0.59 s of 1.21 s); the same loss from full logits takes a fraction of it. TRL's
    logged entropy and token accuracy come from the same logits (answer tokens only).

    Only positions from the batch's first answer token on get logits (`logits_to_keep`, labels cut to match):
    the prompt and image (~36% of a sample's tokens) never go through the output layer, which is as wide as
    the whole language model on the tiny presets. The loss is the same sum over answer tokens.
    """
    import torch
    from trl import SFTTrainer

    if cuda:
        return SFTTrainer
    from transformers import Trainer

    class FullLogitsSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            answer = inputs["labels"] != -100
            if answer.any():  # keep the positions that predict answer tokens: from the one before the first on
                keep = inputs["labels"].shape[1] - int(answer.float().argmax(1)[answer.any(1)].min()) + 1
                inputs["labels"], inputs["logits_to_keep"] = inputs["labels"][:, -keep:], keep
            loss, outputs = Trainer.compute_loss(self, model, inputs, True, num_items_in_batch)
            with torch.no_grad():
                labels = inputs["labels"][:, 1:]
                mask = labels != -100
                logp = outputs.logits[:, :-1][mask].float().log_softmax(-1)
                metrics = self._metrics["train" if model.training else "eval"]
                if mask.any():
                    metrics["entropy"].append(-(logp.exp() * logp).sum(-1).mean().item())
                    metrics["mean_token_accuracy"].append((logp.argmax(-1) == labels[mask]).float().mean().item())
            return (loss, outputs) if return_outputs else loss

    return FullLogitsSFTTrainer


class _ProgressLog:
    """A TrainerCallback factory that logs step, loss and ETA (TRL's own bar is off in DVC logs)."""

    @staticmethod
    def make(total_steps: int):
        from transformers import TrainerCallback

        class ProgressLog(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                self.start = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs and state.global_step:
                    elapsed = time.perf_counter() - self.start
                    eta = elapsed / state.global_step * (total_steps - state.global_step)
                    log.info("step %d/%d loss %.4f eta %.0fs", state.global_step, total_steps, logs["loss"], eta)

        return ProgressLog()


class SFTRun(LoraRun):
    """One (family, strategy) of the finetune matrix from the base at `base_path`; see `finetune`."""

    attach_lora_first = True  # before the trainer seeds: the adapter's initial weights follow the run's seed

    def __init__(self, base_path, dataset_dir, family: str, strategy: str, cfg: FinetuneConfig, out_dir,
                 retriever=None, live_dir: str | Path | None = None):
        # PEFT modules_to_save: the output layer trains in full (FinetuneConfig.train_lm_head says why)
        super().__init__(base_path, family, out_dir, strategy=strategy, r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout,
                         seed=cfg.seed, backend=cfg.backend, load_in_4bit=cfg.load_in_4bit,
                         gradient_checkpointing=cfg.gradient_checkpointing, distributed=cfg.distributed,
                         live_dir=live_dir, lora_extra={"modules_to_save": ["lm_head"]} if cfg.train_lm_head else {})
        self.dataset_dir, self.cfg, self.retriever = dataset_dir, cfg, retriever
        self.checkpoints = Path(f"{out_dir}.checkpoints")

    def prepare(self, model):
        soften_output_layer(model, self.cfg.lm_head_temperature)  # before LoRA wraps the output layer
        use_packed_vision_attention(model)  # Qwen's vision windows in one attention call: same numbers, fewer kernels
        return model

    def build_trainer(self, model, out: Path):
        from trl import SFTConfig

        cfg = self.cfg
        self.dataset = load_dataset_dir(self.dataset_dir)
        if cfg.rag_fraction > 0 and self.retriever is None:
            raise ValueError("finetune.rag_fraction > 0 needs a retriever (build data/rag: dvc repro rag-index)")
        train = sft_dataset(self.dataset["train"], self.processor, self.family, cfg.train_images,
                            retriever=self.retriever, rag_fraction=cfg.rag_fraction,
                            detect_fraction=cfg.detect_fraction, rag_distractors=cfg.rag_distractors, seed=cfg.seed)
        rag_samples = sum(train["with_passages"])
        if cfg.compile:
            log.info("compiled %d blocks (the first step compiles them)", compile_blocks(model))
        args = SFTConfig(**self.trainer_args(
            out,
            output_dir=str(self.checkpoints if cfg.checkpoint_every else out / "trainer"),
            max_steps=cfg.steps,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            learning_rate=cfg.lr,
            lr_scheduler_type=cfg.lr_scheduler,
            warmup_steps=cfg.warmup_steps,
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm,
            logging_steps=cfg.log_every,
            save_strategy="steps" if cfg.checkpoint_every else "no",
            save_steps=cfg.checkpoint_every or 500,
            max_length=None,  # truncation would cut image tokens
            assistant_only_loss=answer_only_loss_supported(),
            # passages make a prompt several times longer: batch similar lengths together so a short
            # sample is not padded to a long one's length
            train_sampling_strategy="group_by_length" if rag_samples or cfg.group_by_length else "random",
            length_column_name="length",
            remove_unused_columns=False,  # keep `length` for the sampler; the VLM collator ignores it
            activation_offloading=cfg.activation_offloading,
            **({"optim": cfg.optim} if cfg.optim else {}),
        ))
        trainer = sft_trainer_class(self.cuda)(
            model=model, args=args, train_dataset=train, processing_class=self.processor,
            callbacks=[_ProgressLog.make(cfg.steps)], optimizers=(self.optimizer(model), None))
        if cfg.checkpoint_every and self.checkpoints.exists():
            from transformers.trainer_utils import get_last_checkpoint

            self.resume = get_last_checkpoint(str(self.checkpoints))
            if self.resume:
                log.info("resuming from %s", self.resume)
        return trainer, {"rag_samples": rag_samples, "train_samples": len(train)}

    def optimizer(self, model):
        """None (the Trainer's own AdamW) unless the output layer learns at its own rate."""
        if self.cfg.lm_head_lr_scale == 1.0:
            return None
        import torch

        head, rest = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (head if "lm_head" in name else rest).append(p)
        groups = [{"params": rest}, {"params": head, "lr": self.cfg.lr * self.cfg.lm_head_lr_scale}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.cfg.lr,
                                 weight_decay=self.cfg.weight_decay)

    def save_merged_extras(self, merged_dir: Path) -> None:
        preset = Path(self.info["path"]) / PRESET_FILE  # a preset base stays marked as one
        if preset.exists():
            (merged_dir / PRESET_FILE).write_text(preset.read_text())

    def metrics(self, run: dict, data: dict, steps: list[dict], merged) -> dict:
        cfg = self.cfg
        metrics = {
            "distributed": run["distributed"],
            "world_size": run["world_size"],
            "resumed_from": Path(self.resume).name if self.resume else None,
            "family": self.family,
            "strategy": self.strategy,
            "backend": run["backend"],
            "device": run["device"],
            "trainable_parameters": run["trainable_parameters"],
            "lora_layers": run["lora_layers"],
            "steps": cfg.steps,
            **data,
            "train_seconds": run["train_seconds"],
            "final_loss": steps[-1]["loss"] if steps else None,
        }
        if cfg.eval_images:
            metrics["valid"] = evaluate_reports(merged, self.processor, self.family, self.dataset["valid"],
                                                cfg.eval_images, cfg.eval_batch_size, cfg.max_new_tokens)
        return metrics

    def config_record(self) -> dict:
        return {**asdict(self.cfg), "base": str(self.start_model)}

    def finish(self) -> None:
        shutil.rmtree(self.checkpoints, ignore_errors=True)  # a finished run needs no resume point


def finetune(base_path: str, dataset_dir: str | Path, family: str, strategy: str, cfg: FinetuneConfig,
             out_dir: str | Path, retriever=None, live_dir: str | Path | None = None) -> dict:
    """Train a LoRA adapter; save adapter, merged model + processor, training log and valid metrics.

    `retriever` (a `ToolRetriever`) is needed when `cfg.rag_fraction > 0`; `live_dir`: the DVCLive
    directory of the training curves (None: none written).
    """
    return SFTRun(base_path, dataset_dir, family, strategy, cfg, out_dir, retriever, live_dir).train()


def soften_output_layer(model, temperature: float) -> None:
    """Divide the output layer (weight and bias) by `temperature`: every logit scales by 1/T, so greedy
    answers stay the same and the probabilities soften. A tied head is refused: dividing it would change
    the input embeddings too."""
    import torch

    if temperature == 1.0:
        return
    head = model.get_output_embeddings()
    if head.weight is model.get_input_embeddings().weight:
        raise ValueError("finetune.lm_head_temperature needs an untied output layer (tie_word_embeddings)")
    with torch.no_grad():
        head.weight.div_(temperature)
        if getattr(head, "bias", None) is not None:
            head.bias.div_(temperature)


def answer_only_loss_supported() -> bool:
    """TRL 1.16 computes the loss on the answer alone for vision data only with transformers >= 5.18.
    unsloth's environment pins transformers 5.17 (README): there the loss covers the prompt too (same
    FLOPs, other loss values), with a warning, instead of refusing to train."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("5.18.0"):
        return True
    log.warning("transformers %s < 5.18: TRL cannot mask the prompt of vision samples; the loss covers "
                "the whole sequence", transformers.__version__)
    return False


def evaluate_reports(model, processor, family: str, split, n: int, batch_size: int = 25,
                     max_new_tokens: int = 400, passages=None) -> dict:
    """JSON validity, detection, name F1 and KB agreement of the safety fields on `n` rows of `split`."""
    rows = split.select(range(min(n, len(split))))
    images = [r["image"] for r in rows]
    start = time.perf_counter()
    results = predict_reports(model, processor, family, images, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, passages=passages)
    seconds = time.perf_counter() - start
    det, safety, valid = DetectionScores(), SafetyAgreement(), 0
    for row, (result, _) in zip(rows, results):
        valid += result.valid
        # a name outside the 17 is still a prediction: a false positive, as in the eval stage
        preds = [t.model_dump() for t in result.report.tools] + [{**u, "name": UNKNOWN} for u in result.unknown]
        truths = row["instances"]
        det.add(preds, truths)
        for i, j, _ in match_image(preds, truths):
            safety.add(preds[i], truths[j])
    texts = [text for _, text in results]
    summary = det.summary()
    summary.pop("per_class")
    return {
        "images": len(images),
        "json_valid": valid / max(1, len(images)),
        **summary,
        "safety_agreement": safety.summary(),
        "seconds_per_image": round(seconds / max(1, len(images)), 4),
        "example_answer": texts[0][:600] if texts else "",
    }
