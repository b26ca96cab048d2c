"""Train a preset's base from scratch: the stand-in for a pretrained VLM when no hub is reachable.

The task is more generic than the finetune's: find the tools and give names and boxes only
(`task="detect"`), on scenes rendered on the fly (never the same image twice), so the finetune still
has the safety fields to teach. Measured (shared/notes/tiny-vlm-from-scratch.md): a 7M model needs
~100k+ samples before boxes come, which is minutes on one GPU and about an hour on 2 CPU cores; so the
tiny bases are trained on a GPU once and shipped (`models/shipped/`), and CPU runs start from them.

A plain loop rather than `transformers.Trainer`: data are rendered in DataLoader workers without end,
and the budget is wall-clock minutes, with bf16 autocast over fp32 weights on CUDA.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from safetyvlm.config import from_section

log = logging.getLogger("safetyvlm.base")


@dataclass
class BaseTrainConfig:
    """The `base:` training knobs in params.yaml (used when a preset's base is trained afresh)."""

    minutes: float = 8.0  # wall-clock budget of the training loop
    max_steps: int = 1_000_000
    batch_size: int = 64
    lr: float = 1e-3
    vision_lr_scale: float = 1.0  # vision tower + projector learn at lr * this
    warmup_steps: int = 300
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    workers: int = 8
    seed: int = 0
    eval_images: int = 200
    eval_batch_size: int = 50
    max_new_tokens: int = 160
    log_every: int = 50
    # Dense auxiliary loss on the vision features the language model reads (one cell per merged
    # token / patch): which class (or background) covers the cell most. Without it a from-scratch tiny VLM
    # stays blind for 200k+ samples (loss stuck at the text-only floor; measured, see README).
    aux_weight: float = 1.0
    aux_min_cover: float = 0.05  # a cell's label is its most-covering class if it covers this share, else background
    curriculum_samples: int = 30_000  # the first scenes show one tool each (easier to start seeing)
    # Language exposure: every `text_every` steps (0: never) also a batch of plain text about the
    # tools (the knowledge base written as prose), the stand-in for the web text a real VLM's
    # language model was pretrained on. Without it the base has never produced the
    # safety vocabulary and a LoRA finetune cannot teach it in minutes (measured).
    text_every: int = 0
    text_batch_size: int = 16
    text_steps: int = 0  # then this many language-only steps on that prose (cheap: no images)
    text_lr: float = 1e-3
    render: dict = field(default_factory=dict)  # RenderConfig overrides, like dataset.render
    init_from: str | None = None  # continue from an earlier base (its record is kept as provenance)

    @classmethod
    def from_dict(cls, d: dict) -> "BaseTrainConfig":
        return from_section(cls, d, "base.train")


def detection_text(instances: list[dict], image_size, frame) -> str:
    """The base task's answer: names and model-frame boxes only, in the contract's key order."""
    from safetyvlm.model.boxes import to_model_frame

    tools = [{"name": i["name"], "bbox_2d": to_model_frame(i["bbox_2d"], image_size, frame)} for i in instances]
    return json.dumps({"tools": tools}, separators=(", ", ": "))


def rendered_scenes(frame, render: dict, seed: int, grid: tuple[int, int] | None = None):
    """An endless torch IterableDataset of (image, detection target); see `_RenderedScenes`."""
    import torch

    class RenderedScenes(_RenderedScenes, torch.utils.data.IterableDataset):
        pass

    return RenderedScenes(frame, render, seed, grid)


class _RenderedScenes:
    """An endless torch IterableDataset of (image, detection target) rendered on the fly.

    Worker w of W renders images w, w+W, w+2W, ... of a seeded stream, so a run is reproducible for a
    given worker count and no two workers render the same scene.
    """

    def __init__(self, frame, render: dict, seed: int, grid: tuple[int, int] | None = None):
        from safetyvlm.data.render import RenderConfig

        self.frame = frame
        self.cfg = RenderConfig.from_dict({**render, "balanced": False})
        self.easy = RenderConfig.from_dict({**render, "balanced": False, "min_tools": 1, "max_tools": 1})
        self.seed = seed
        self.grid = grid
        self.curriculum = 0

    def __iter__(self):
        import torch

        from safetyvlm.data.render import render_scene

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        i = wid
        while True:
            rng = np.random.default_rng([self.seed, i])
            cfg = self.easy if i < self.curriculum else self.cfg
            image, tools, masks = render_scene(rng, cfg, return_masks=True)
            cover = cell_cover(tools, masks, self.grid) if self.grid else None
            yield image, detection_text(tools, image.size, self.frame), cover
            i += nw


def cell_cover(tools: list[dict], masks: list, grid: tuple[int, int]) -> np.ndarray:
    """(cells, 17) share of each grid cell covered by each class's visible pixels, raster order."""
    from safetyvlm.schema import CATEGORY_INDEX

    gh, gw = grid
    cover = np.zeros((gh * gw, len(CATEGORY_INDEX)), dtype=np.float32)
    for tool, mask in zip(tools, masks):
        h, w = mask.shape
        ys = np.linspace(0, h, gh + 1).astype(int)
        xs = np.linspace(0, w, gw + 1).astype(int)
        sums = np.add.reduceat(np.add.reduceat(mask.astype(np.float32), ys[:-1], axis=0), xs[:-1], axis=1)
        area = np.outer(np.diff(ys), np.diff(xs))
        cover[:, CATEGORY_INDEX[tool["name"]]] += (sums / area).reshape(-1)
    return np.clip(cover, 0, 1)


def vision_grid(family: str, processor, image_size: tuple[int, int]) -> tuple[int, int]:
    """Rows x columns of the vision features the language model reads, for one image."""
    if family == "qwen2_5_vl":
        from safetyvlm.model.boxes import model_frame

        w, h = model_frame(family, processor).extent(image_size)
        f = processor.image_processor.patch_size * processor.image_processor.merge_size
        return h // f, w // f
    ip = processor.image_processor
    side = ip.size["height"] // 14 if isinstance(ip.size, dict) else 8
    return side, side


class VisionProbe:
    """Captures the vision features the language model reads (forward hook) and scores a linear
    per-cell class probe on them. The probe is for training only and is never saved."""

    def __init__(self, model, family: str, n_classes: int):
        import torch

        self.family = family
        if family == "qwen2_5_vl":
            module, dim = model.model.visual, model.config.vision_config.out_hidden_size
        else:
            module, dim = model.model.multi_modal_projector, model.config.text_config.hidden_size
        self.head = torch.nn.Linear(dim, n_classes)
        self.features = None
        module.register_forward_hook(self._capture)

    def _capture(self, module, args, output):
        self.features = output.pooler_output if self.family == "qwen2_5_vl" else output

    def loss(self, cover, min_cover: float):
        import torch

        best, label = cover.max(dim=-1)
        label = torch.where(best >= min_cover, label, torch.full_like(label, cover.shape[-1]))  # background
        feats = self.features
        if self.family == "qwen2_5_vl":
            feats = feats.reshape(cover.shape[0], cover.shape[1], -1)  # merged tokens, raster order
        else:
            feats = feats.reshape(cover.shape[0], -1, feats.shape[-1])[:, 1 : 1 + cover.shape[1]]  # drop CLS
        logits = self.head(feats.float())
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), label.reshape(-1))


def tool_prose(seed: int = 0, repeats: int = 6) -> list[str]:
    """Plain-text notes about the tools: each knowledge-base entry's function, PPE, hazards and
    misuses as prose, fields in varied order. No JSON: the answer format is the finetune's to teach.
    (Short on purpose: a language step on 2 CPU cores costs ~1 s per 1k tokens.)"""
    from safetyvlm.kb import load_kb

    kb = load_kb()
    rng = np.random.default_rng(seed)
    docs = []
    for name, entry in kb.tools.items():
        parts = [
            f"Primary function: {entry.primary_function}",
            f"Required PPE: {', '.join(entry.required_ppe)}.",
            f"Primary hazards: {'; '.join(entry.primary_hazards)}.",
            f"Common misuses: {'; '.join(entry.common_misuses)}.",
        ]
        for _ in range(repeats):
            order = rng.permutation(len(parts))
            docs.append(f"{name}. " + " ".join(parts[i] for i in order))
    return docs


def text_batches(processor, docs: list[str], batch_size: int, seed: int):
    """Endless batches of tokenized prose for a plain causal-LM loss (no image)."""
    tok = processor.tokenizer
    rng = np.random.default_rng(seed)
    while True:
        pick = [docs[i] for i in rng.integers(0, len(docs), batch_size)]
        old = tok.padding_side
        tok.padding_side = "right"
        enc = tok([d + tok.eos_token for d in pick], padding=True, truncation=True, max_length=256,
                  add_special_tokens=False, return_tensors="pt")
        tok.padding_side = old
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        yield {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def _collate(processor):
    from safetyvlm.model.batch import encode_batch

    def collate(items):
        import torch

        images, targets, covers = zip(*items)
        batch = encode_batch(processor, list(images), list(targets), task="detect")
        if covers[0] is not None:
            batch["aux_cover"] = torch.from_numpy(np.stack(covers))
        return batch

    return collate


def _param_groups(model, cfg: BaseTrainConfig):
    vision, language, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "norm" in name or "gate" in name:
            no_decay.append(p)
        elif ".visual." in f".{name}" or "vision_model" in name or "multi_modal_projector" in name:
            vision.append(p)
        else:
            language.append(p)
    return [
        {"params": language, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": vision, "lr": cfg.lr * cfg.vision_lr_scale, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
    ]


def evaluate_detection(model, processor, family: str, *, n: int, seed: int, render: dict,
                       batch_size: int = 50, max_new_tokens: int = 160, task: str = "detect") -> dict:
    """Name F1, detection P/R/F1@0.5, mean IoU and JSON validity on `n` freshly rendered scenes."""
    from safetyvlm.data.render import RenderConfig, render_examples
    from safetyvlm.eval.detection import DetectionScores
    from safetyvlm.model.predict import predict_reports

    examples = list(render_examples(n, seed, RenderConfig.from_dict(render), split="eval"))
    results = predict_reports(model, processor, family, [e.image for e in examples],
                              max_new_tokens=max_new_tokens, batch_size=batch_size, task=task)
    scores, json_ok = DetectionScores(), 0
    for ex, (result, _) in zip(examples, results):
        json_ok += result.json_ok
        scores.add([t.model_dump() for t in result.report.tools], ex.instances)
    texts = [text for _, text in results]
    summary = scores.summary()
    summary.pop("per_class")
    summary["json_ok"] = json_ok / max(1, len(examples))
    summary["images"] = len(examples)
    summary["example_answer"] = texts[0][:400] if texts else ""
    return summary


def train_text(model, processor, cfg: BaseTrainConfig, device: str) -> list[dict]:
    """Language-only steps on the tools' prose (vision untouched: no image in these batches)."""
    import torch
    from tqdm import tqdm

    texts = text_batches(processor, tool_prose(cfg.seed), cfg.text_batch_size, cfg.seed + 1)
    params = [p for n, p in model.named_parameters()
              if not (".visual." in f".{n}" or "vision_model" in n or "multi_modal_projector" in n)]
    opt = torch.optim.AdamW(params, lr=cfg.text_lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    history = []
    model.train()
    for step in tqdm(range(1, cfg.text_steps + 1), desc="base text", mininterval=5):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**{k: v.to(device) for k, v in next(texts).items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % cfg.log_every == 0 or step == 1:
            history.append({"text_step": step, "text_loss": round(float(loss.detach()), 5)})
    return history


def train_base(model, processor, family: str, cfg: BaseTrainConfig, out_dir: str | Path,
               device: str | None = None) -> dict:
    """Train all parameters on rendered scenes for `cfg.minutes`; save bf16 weights + a record."""
    import torch
    from tqdm import tqdm

    from safetyvlm.io import atomic_output_dir
    from safetyvlm.model.boxes import model_frame

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    if device == "cuda":
        # cuDNN attention re-plans for every new sequence length: 2-7x slower steps here (measured).
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(device=device, dtype=torch.float32)
    model.train()
    frame = model_frame(family, processor)
    from safetyvlm.data.render import RenderConfig
    from safetyvlm.schema import CATEGORIES

    rc = RenderConfig.from_dict(cfg.render)
    grid = vision_grid(family, processor, (rc.width, rc.height)) if cfg.aux_weight > 0 else None
    probe = VisionProbe(model, family, len(CATEGORIES) + 1) if grid else None  # + background
    if probe:
        probe.head.to(device)
    data = rendered_scenes(frame, cfg.render, cfg.seed, grid)
    data.curriculum = cfg.curriculum_samples
    workers = cfg.workers if device == "cuda" else min(cfg.workers, max(0, (os.cpu_count() or 1) - 1))
    loader = torch.utils.data.DataLoader(
        data, batch_size=cfg.batch_size, num_workers=workers, collate_fn=_collate(processor),
        pin_memory=device == "cuda", prefetch_factor=4 if workers else None,
        persistent_workers=bool(workers),
    )
    groups = _param_groups(model, cfg)
    if probe:
        groups.append({"params": list(probe.head.parameters()), "lr": cfg.lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.95), fused=device == "cuda")
    # Warmup then cosine to min_lr_ratio over the steps the wall-clock budget allows; that count is
    # known once the step time is (after 50 steps), so the schedule reads it from `plan`.
    plan = {"total": cfg.max_steps}

    def lr_factor(s: int) -> float:
        if s < cfg.warmup_steps:
            return (s + 1) / cfg.warmup_steps
        progress = min(1.0, (s - cfg.warmup_steps) / max(1, plan["total"] - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    texts = text_batches(processor, tool_prose(cfg.seed), cfg.text_batch_size, cfg.seed) if cfg.text_every else None
    history, skipped = [], 0
    start = time.perf_counter()
    budget = cfg.minutes * 60
    step, samples = 0, 0
    bar = tqdm(total=int(budget), unit="s", desc=f"base {family}", mininterval=5,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}s {postfix}")
    for batch in (loader if budget > 0 else []):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        cover = batch.pop("aux_cover", None)
        with autocast:
            lm_loss = model(**batch).loss
            aux_loss = probe.loss(cover, cfg.aux_min_cover) if probe else torch.zeros((), device=device)
            loss = lm_loss + cfg.aux_weight * aux_loss
            text_loss = torch.zeros((), device=device)
            if texts is not None and step % cfg.text_every == 0:
                text_loss = model(**{k: v.to(device) for k, v in next(texts).items()}).loss
                loss = loss + text_loss
        if not torch.isfinite(loss):
            skipped += 1  # never let one bad batch poison the weights
            opt.zero_grad(set_to_none=True)
            continue
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        samples += batch["input_ids"].shape[0]
        elapsed = time.perf_counter() - start
        if step == 50:
            plan["total"] = min(cfg.max_steps, int(budget / (elapsed / step)))
        if step % cfg.log_every == 0 or step == 1:
            value, aux = float(lm_loss.detach()), float(aux_loss.detach())
            history.append({"step": step, "samples": samples, "seconds": round(elapsed, 1),
                            "loss": round(value, 5), "aux_loss": round(aux, 5),
                            "text_loss": round(float(text_loss.detach()), 5), "lr": opt.param_groups[0]["lr"]})
            bar.n = min(int(elapsed), int(budget))
            bar.set_postfix_str(f"step {step} loss {value:.4f} aux {aux:.4f} text {float(text_loss):.3f} "
                                f"{samples / elapsed:.0f} samples/s")
        if elapsed >= budget or step >= cfg.max_steps:
            break
    bar.close()
    text_history = train_text(model, processor, cfg, device) if cfg.text_steps else []
    train_seconds = time.perf_counter() - start
    model.eval()
    metrics = evaluate_detection(model, processor, family, n=cfg.eval_images, seed=cfg.seed + 7919,
                                 render=cfg.render, batch_size=cfg.eval_batch_size,
                                 max_new_tokens=cfg.max_new_tokens)
    record = {
        "family": family,
        "config": asdict(cfg),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "steps": step,
        "samples": samples,
        "train_seconds": round(train_seconds, 1),
        "samples_per_second": round(samples / max(train_seconds, 1e-9), 1),
        "skipped_nonfinite_steps": skipped,
        "final_loss": history[-1]["loss"] if history else None,
        "text_steps": cfg.text_steps,
        "final_text_loss": text_history[-1]["text_loss"] if text_history else None,
        "eval": metrics,
        "torch": torch.__version__,
    }
    with atomic_output_dir(out_dir) as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / "train_log.json").write_text(json.dumps(history + text_history, indent=1) + "\n")
        (tmp / "base_record.json").write_text(json.dumps(record, indent=2) + "\n")
    model.to(torch.float32)
    return record
