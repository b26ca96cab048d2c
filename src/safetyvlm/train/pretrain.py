"""Train a preset's base from scratch: the stand-in for a pretrained VLM when no hub is reachable.

The tasks are those a general instruct VLM knows, not the finetune's: on scenes rendered on the fly (never
the same image twice) find the tools and give names and boxes (`task="detect"`), or answer the report prompt
with generic safety text in the base's own words (`report_fraction`, `data/mixture.py`; some with retrieval
passages in the prompt, cited in `sources`: `report_passages`), plus plain prose
(the retrieval corpus, the class names' synonyms). The knowledge base's exact entries are never shown, so
the finetune still has them to teach and retrieval still has something to add. Several families train
side by side on the same scenes (`train_bases`): rendering is the loader's main cost. Measured (shared/notes/tiny-vlm-from-scratch.md): a 7M model needs
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

from safetyvlm.answer.plain import predict_reports
from safetyvlm.config import from_section
from safetyvlm.data.dataset import shifted_test_set, training_render
from safetyvlm.data.mixture import generic_report_text, prose_documents, safety_phrases, scene_passages
from safetyvlm.data.render import RenderConfig, render_examples, render_scene
from safetyvlm.eval.detection import UNKNOWN, DetectionScores
from safetyvlm.io import atomic_output_dir
from safetyvlm.kb import load_kb
from safetyvlm.live import open_live
from safetyvlm.model.batch import encode_batch
from safetyvlm.model.boxes import model_frame, to_model_frame
from safetyvlm.model.prompts import detection_text
from safetyvlm.model.fast_path import qwen_precomputed, use_packed_vision_attention
from safetyvlm.schema import CATEGORIES, CATEGORY_INDEX

log = logging.getLogger("safetyvlm.base")


@dataclass
class BaseTrainConfig:
    """The `base:` training knobs in params.yaml (used when a preset's base is trained afresh)."""

    minutes: float = 8.8  # wall-clock budget of the training loop
    max_steps: int = 1_000_000
    batch_size: int = 256
    lr: float = 1e-3
    vision_lr_scale: float = 1.0  # vision tower + projector learn at lr * this
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    workers: int = 15
    # Data echoing (Choi et al. 2019): each rendered batch trains this many steps. When the loader bounds
    # the run (loader_wait_share well above 0) the GPU would otherwise idle while scenes are rendered.
    echo: int = 2
    seed: int = 0  # the scene stream; a continuation takes a new one so it never repeats its parent's scenes
    eval_seed: int = 7919  # the evaluation scenes, fixed so every segment is scored on the same 200
    eval_images: int = 200
    eval_batch_size: int = 100
    max_new_tokens: int = 160
    log_every: int = 25
    # Dense auxiliary loss on the vision features the language model reads (one cell per merged
    # token / patch): which class (or background) covers the cell most. Without it a from-scratch tiny VLM
    # stays blind for 200k+ samples (loss stuck at the text-only floor; measured, see README).
    aux_weight: float = 1.0
    aux_min_cover: float = 0.05  # a cell's label is its most-covering class if it covers this share, else background
    # Spread this share of each answer token's target over the vocabulary. Trained on a small corpus for
    # hundreds of thousands of steps a base becomes certain of its own wording: a knowledge-base phrase
    # then costs 15-25 nats a token, and the finetune's first steps are spent (and its boxes damaged)
    # unlearning that certainty, where a real pretrained model finds other wording merely unlikely.
    label_smoothing: float = 0.0
    curriculum_samples: int = 0  # the first scenes show one tool each (easier to start seeing)
    # Language exposure: every `text_every` steps (0: never) also a batch of plain text about the
    # tools (the retrieval corpus's passages and the class names' synonyms), the stand-in for the web
    # text a real VLM's language model was pretrained on. Without it the base has never produced the
    # safety vocabulary and a LoRA finetune cannot teach it in minutes (measured).
    text_every: int = 1
    text_batch_size: int = 16
    # The mixture (data/mixture.py): this share of image batches asks the report prompt and is answered
    # with generic safety text cut from the retrieval corpus (never the knowledge base's entries), so a
    # base answers the contract zero-shot in its own words, as a real instruct VLM would.
    report_fraction: float = 0.4
    # This share of the report batches carries retrieval passages in the prompt (`scene_passages`: the
    # scene's categories' corpus passages, at times one of another category), each tool citing its own in
    # `sources`. A base that never saw passages breaks down when the pipeline's "+ RAG" rows and the
    # service put them in its prompt; a real instruct VLM reads the context it is given.
    report_passages: float = 0.25
    report_tokens: int = 512  # generation budget of the report-task evaluation
    text_steps: int = 0  # then this many language-only steps on that prose (cheap: no images)
    text_lr: float = 1e-3
    # RenderConfig fields of the training scenes. The shifted test set's gap is mostly sizes, surfaces and
    # clutter (benchmarks/base_eval.py --shifted-factors): a base may train on wider ranges than the task's
    # own render settings, as a pretrained VLM has seen more than the finetune's data, short of the
    # shifted set's values and never on its surfaces.
    render: dict = field(default_factory=lambda: {**training_render(), "scale_range": [0.3, 0.85],
                                                  "lighting": 1.4, "clutter": 6})
    # The scenes every segment is scored on: the task's render settings (dataset.render), whatever
    # `render` widens, so segments stay comparable; and the shifted test set's overrides on them
    # (dataset.shifted.render; null: not scored there).
    eval_render: dict = field(default_factory=training_render)
    eval_shifted: dict | None = field(default_factory=lambda: shifted_test_set()["render"])
    init_from: str | None = None  # continue from an earlier base (its record is kept as provenance)

    @classmethod
    def from_dict(cls, d: dict) -> "BaseTrainConfig":
        return from_section(cls, d, "base.train")


def report_text(instances: list[dict], image_size, frame, phrases, rng, passages=None) -> str:
    """A report answer with generic safety text from the corpus (`data.mixture`), model-frame boxes;
    with the prompt's `passages`, each tool cites its own in `sources`."""
    tools = [{"name": i["name"], "bbox_2d": to_model_frame(i["bbox_2d"], image_size, frame)} for i in instances]
    return generic_report_text(tools, phrases, rng, passages)


def rendered_batches(parts: dict, render: dict, seed: int, batch_size: int, *, report_fraction: float = 0.0,
                     report_passages: float = 0.0, curriculum: int = 0, aux: bool = True):
    """An endless torch IterableDataset of batches (see `_RenderedBatches`); use with `batch_size=None`."""
    import torch

    class RenderedBatches(_RenderedBatches, torch.utils.data.IterableDataset):
        pass

    return RenderedBatches(parts, render, seed, batch_size, report_fraction, curriculum, aux, report_passages)


class _RenderedBatches:
    """Endless model batches of scenes rendered on the fly, one batch per family from the same scenes.

    `parts` maps family -> (processor, frame, grid, config): every family trains on the same images
    (rendering is the loader's main cost, so two families side by side cost little more than one); with a
    Qwen2.5-VL `config` the batch also carries the position ids and window tables the model would otherwise
    rebuild image by image on the device (`model.fast_path.qwen_precomputed`). Batch b holds scenes
    b*B ... b*B+B-1 of a seeded stream and is built by worker b mod W, so a run is reproducible for a given
    worker count. A batch asks either the detection prompt (names and boxes) or, with probability
    `report_fraction`, the report prompt answered with generic safety text (`data.mixture`), a
    `report_passages` share of those with retrieval passages in the prompt; the first `curriculum` scenes
    show one tool each.
    """

    def __init__(self, parts: dict, render: dict, seed: int, batch_size: int, report_fraction: float,
                 curriculum: int, aux: bool, report_passages: float = 0.0):
        self.parts = parts
        self.cfg = RenderConfig.from_dict({**render, "balanced": False})
        self.easy = RenderConfig.from_dict({**render, "balanced": False, "min_tools": 1, "max_tools": 1})
        self.seed, self.batch_size = seed, batch_size
        self.report_fraction, self.curriculum, self.aux = report_fraction, curriculum, aux
        self.report_passages = report_passages
        self.phrases = self.kb = None

    def batch(self, b: int) -> dict:
        import torch

        if self.phrases is None:
            self.kb = load_kb()
            self.phrases = safety_phrases(self.kb)
        task = "report" if np.random.default_rng([self.seed, b, 1]).random() < self.report_fraction else "detect"
        # its own stream: with report_passages 0 the batches are those of a run without the option
        prng = np.random.default_rng([self.seed, b, 3])
        with_passages = task == "report" and prng.random() < self.report_passages
        scenes = []
        for i in range(b * self.batch_size, (b + 1) * self.batch_size):
            cfg = self.easy if i < self.curriculum else self.cfg
            scenes.append(render_scene(np.random.default_rng([self.seed, i]), cfg, return_masks=True))
        images = [im for im, _, _ in scenes]
        passages = ([scene_passages([t["name"] for t in tools], self.kb, prng) for _, tools, _ in scenes]
                    if with_passages else None)
        out = {}
        for family, (processor, frame, grid, config) in self.parts.items():
            if task == "report":
                rng = np.random.default_rng([self.seed, b, 2])  # same phrases for every family
                targets = [report_text(t, im.size, frame, self.phrases, rng, passages[j] if passages else None)
                           for j, (im, t, _) in enumerate(scenes)]
            else:
                targets = [detection_text(t, im.size, frame) for im, t, _ in scenes]
            batch = encode_batch(processor, images, targets, passages=passages, task=task)
            if config is not None and getattr(config, "model_type", "") == "qwen2_5_vl":
                batch.update(qwen_precomputed(batch, config))
            if self.aux and grid:
                batch["aux_cover"] = torch.from_numpy(np.stack([cell_cover(t, m, grid) for _, t, m in scenes]))
            out[family] = batch
        return out

    def __iter__(self):
        import torch

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        b = wid
        while True:
            yield self.batch(b)
            b += nw


def cell_cover(tools: list[dict], masks: list, grid: tuple[int, int]) -> np.ndarray:
    """(cells, 17) share of each grid cell covered by each class's visible pixels, raster order."""
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


def evaluate_base(model, processor, family: str, *, n: int, seed: int, render: dict,
                  batch_size: int = 50, max_new_tokens: int = 160, task: str = "detect",
                  with_passages: bool = False) -> dict:
    """Name F1, detection P/R/F1@0.5, mean IoU, JSON readable / strictly valid, and (report task) the
    share of tools with all four safety fields filled, on `n` freshly rendered scenes. `with_passages`:
    each prompt carries the scene's passages (`scene_passages`, as a retriever that found the right tools
    would give), and `sources_cited` is the share of tools citing only passages of their own name."""
    examples = list(render_examples(n, seed, RenderConfig.from_dict(render), split="eval"))
    passages = None
    if with_passages:
        kb = load_kb()
        passages = [scene_passages([i["name"] for i in e.instances], kb, np.random.default_rng([seed, j, 3]))
                    for j, e in enumerate(examples)]
    results = predict_reports(model, processor, family, [e.image for e in examples],
                              max_new_tokens=max_new_tokens, batch_size=batch_size, task=task, passages=passages)
    scores, json_ok, valid, tools, filled, cited = DetectionScores(), 0, 0, 0, 0, 0
    for j, (ex, (result, _)) in enumerate(zip(examples, results)):
        json_ok += result.json_ok
        valid += result.valid
        # a name outside the 17 is still a prediction: a false positive, as in the eval stage
        preds = [t.model_dump() for t in result.report.tools] + [{**u, "name": UNKNOWN} for u in result.unknown]
        scores.add(preds, ex.instances)
        for t in result.report.tools:
            tools += 1
            filled += bool(t.primary_function and t.required_ppe and t.primary_hazards and t.common_misuses)
            if passages is not None:
                own = {p["id"] for p in passages[j] if p["category"] == t.name}
                cited += bool(t.sources) and set(t.sources) <= own
    texts = [text for _, text in results]
    summary = scores.summary()
    summary.pop("per_class")
    summary["json_ok"] = json_ok / max(1, len(examples))
    summary["json_valid"] = valid / max(1, len(examples))
    if task == "report":
        summary["safety_fields_filled"] = filled / tools if tools else None
    if passages is not None:
        summary["sources_cited"] = cited / tools if tools else None
    summary["task"] = task
    summary["images"] = len(examples)
    summary["example_answer"] = texts[0][:600] if texts else ""
    return summary


def _language_params(model):
    return [p for n, p in model.named_parameters()
            if not (".visual." in f".{n}" or "vision_model" in n or "multi_modal_projector" in n)]


def train_text(model, processor, cfg: BaseTrainConfig, device: str) -> list[dict]:
    """Language-only steps on the prose (vision untouched: no image in these batches)."""
    import torch
    from tqdm import tqdm

    texts = text_batches(processor, prose_documents(), cfg.text_batch_size, cfg.seed + 1)
    params = _language_params(model)
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


class _FamilyRun:
    """One family's model, optimiser, probe and text stream inside the shared loop of `train_bases`."""

    def __init__(self, family, model, processor, cfg: BaseTrainConfig, device: str, lr_factor):
        import torch

        self.family, self.model, self.processor, self.cfg, self.device = family, model, processor, cfg, device
        model.to(device=device, dtype=torch.float32)
        model.train()
        self.packed = use_packed_vision_attention(model)  # same numbers, far fewer kernels (fast_path)
        self.probe = VisionProbe(model, family, len(CATEGORIES) + 1) if cfg.aux_weight > 0 else None  # + bg
        groups = _param_groups(model, cfg)
        if self.probe:
            self.probe.head.to(device)
            groups.append({"params": list(self.probe.head.parameters()), "lr": cfg.lr, "weight_decay": 0.0})
        self.opt = torch.optim.AdamW(groups, betas=(0.9, 0.95), fused=device == "cuda")
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor)
        self.texts = (text_batches(processor, prose_documents(), cfg.text_batch_size, cfg.seed)
                      if cfg.text_every else None)
        self.history, self.skipped, self.steps, self.samples = [], 0, 0, 0

    def _lm_loss(self, batch: dict):
        """The model's next-token loss (mean over answer tokens), label-smoothed when configured."""
        import torch.nn.functional as F

        if not self.cfg.label_smoothing:
            return self.model(**batch).loss
        labels = batch.pop("labels")
        logits = self.model(**batch).logits[:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=-100, label_smoothing=self.cfg.label_smoothing)

    def step(self, batch: dict, step: int) -> dict | None:
        import torch

        cfg, device = self.cfg, self.device
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        cover = batch.pop("aux_cover", None)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
                    else torch.autocast("cpu", enabled=False))
        with autocast:
            lm_loss = self._lm_loss(batch)
            aux_loss = (self.probe.loss(cover, cfg.aux_min_cover) if self.probe and cover is not None
                        else torch.zeros((), device=device))
            loss = lm_loss + cfg.aux_weight * aux_loss
            text_loss = torch.zeros((), device=device)
            if self.texts is not None and step % cfg.text_every == 0:
                text_loss = self._lm_loss({k: v.to(device) for k, v in next(self.texts).items()})
                loss = loss + text_loss
        if not torch.isfinite(loss):
            self.skipped += 1  # never let one bad batch poison the weights
            self.opt.zero_grad(set_to_none=True)
            return None
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.steps += 1
        self.samples += batch["input_ids"].shape[0]
        return {"loss": lm_loss, "aux_loss": aux_loss, "text_loss": text_loss}


def train_bases(parts: dict, cfg: BaseTrainConfig, out_dirs: dict, device: str | None = None,
                live_dir: str | Path | None = None) -> dict:
    """Train every family in `parts` ({family: (model, processor)}) on the same rendered scenes for
    `cfg.minutes`, each with all parameters; save bf16 weights + a record per family. Returns the records.
    `live_dir`: the curves (loss, aux, text loss, lr) go to DVCLive under `live_dir/<family>`."""
    import torch
    from tqdm import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    if device == "cuda":
        # cuDNN attention re-plans for every new sequence length: 2-7x slower steps here (measured).
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rc = RenderConfig.from_dict(cfg.render)
    loader_parts = {
        f: (proc, model_frame(f, proc), vision_grid(f, proc, (rc.width, rc.height)) if cfg.aux_weight > 0 else None,
            model.config)
        for f, (model, proc) in parts.items()
    }
    data = rendered_batches(loader_parts, cfg.render, cfg.seed, cfg.batch_size, report_fraction=cfg.report_fraction,
                            report_passages=cfg.report_passages, curriculum=cfg.curriculum_samples,
                            aux=cfg.aux_weight > 0)
    workers = cfg.workers if device == "cuda" else min(cfg.workers, max(0, (os.cpu_count() or 1) - 1))
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers, pin_memory=device == "cuda",
                                         prefetch_factor=2 if workers else None, persistent_workers=bool(workers))
    # Warmup then cosine to min_lr_ratio over the steps the wall-clock budget allows; that count is
    # known once the step time is (after 50 steps), so the schedule reads it from `plan`.
    plan = {"total": cfg.max_steps}

    def lr_factor(s: int) -> float:
        if s < cfg.warmup_steps:
            return (s + 1) / cfg.warmup_steps
        progress = min(1.0, (s - cfg.warmup_steps) / max(1, plan["total"] - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    runs = {f: _FamilyRun(f, model, proc, cfg, device, lr_factor) for f, (model, proc) in parts.items()}
    if live_dir is not None:
        lives = {f: open_live(Path(live_dir) / f) for f in runs}
    else:
        lives = {}
    start = time.perf_counter()
    budget = cfg.minutes * 60
    step = 0
    waited = 0.0  # seconds the loop spent waiting for the loader: the share says what bounds the run
    ready = time.perf_counter()
    bar = tqdm(total=int(budget), unit="s", desc="base " + "+".join(parts), mininterval=5,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}s {postfix}")
    def echoed(batches):
        for b in batches:
            for _ in range(max(1, cfg.echo)):
                yield b

    for batches in (echoed(loader) if budget > 0 else []):
        waited += time.perf_counter() - ready
        losses = {f: run.step(batches[f], step) for f, run in runs.items()}  # each step syncs (finite check)
        ready = time.perf_counter()
        step += 1
        elapsed = ready - start
        if step == 50:
            plan["total"] = min(cfg.max_steps, int(budget / (elapsed / step)))
        if step % cfg.log_every == 0 or step == 1:
            post = []
            for f, run in runs.items():
                if losses[f] is None:
                    continue
                vals = {k: round(float(v.detach()), 5) for k, v in losses[f].items()}
                run.history.append({"step": step, "samples": run.samples, "seconds": round(elapsed, 1),
                                    "data_wait_seconds": round(waited, 1), **vals,
                                    "lr": run.opt.param_groups[0]["lr"]})
                if f in lives:
                    lives[f].step = step
                    for k, v in {**vals, "lr": run.opt.param_groups[0]["lr"]}.items():
                        lives[f].log_metric(f"train/{k}", v)
                post.append(f"{f} loss {vals['loss']:.3f} aux {vals['aux_loss']:.3f} text {vals['text_loss']:.3f}")
            bar.n = min(int(elapsed), int(budget))
            samples = sum(run.samples for run in runs.values()) / len(runs)
            bar.set_postfix_str(f"step {step} " + " | ".join(post) + f" | {samples / elapsed:.0f} scenes/s"
                                f" | loader wait {waited / elapsed:.0%}")
        if elapsed >= budget or step >= cfg.max_steps:
            break
    bar.close()
    for live in lives.values():
        live.end()
    records = {}
    for f, run in runs.items():
        text_history = train_text(run.model, run.processor, cfg, device) if cfg.text_steps else []
        train_seconds = time.perf_counter() - start
        run.model.eval()
        # the report prompt with passages is scored too once the mixture has it (it costs a third more)
        # name: (prompt, passages in it, render settings of the scenes)
        tasks = {"detect": ("detect", False, cfg.eval_render), "report": ("report", False, cfg.eval_render)}
        if cfg.report_passages:
            tasks["passages"] = ("report", True, cfg.eval_render)
        if cfg.eval_shifted is not None:
            tasks["shifted"] = ("report", False, {**cfg.eval_render, **cfg.eval_shifted})
        evals = {name: evaluate_base(run.model, run.processor, f, n=cfg.eval_images, seed=cfg.eval_seed,
                                     render=render, batch_size=cfg.eval_batch_size,
                                     max_new_tokens=cfg.max_new_tokens if task == "detect" else cfg.report_tokens,
                                     task=task, with_passages=wp)
                 for name, (task, wp, render) in tasks.items()}
        record = {
            "family": f,
            "config": asdict(cfg),
            "trained_with": sorted(parts),
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "steps": run.steps,
            "samples": run.samples,
            "scenes": run.samples // max(1, cfg.echo),  # fresh rendered scenes (samples counts echoes)
            "train_seconds": round(train_seconds, 1),
            "samples_per_second": round(run.samples / max(train_seconds, 1e-9), 1),
            "loader_wait_share": round(waited / max(elapsed, 1e-9), 3) if step else None,
            "packed_vision_attention": run.packed,
            "skipped_nonfinite_steps": run.skipped,
            "final_loss": run.history[-1]["loss"] if run.history else None,
            "text_steps": cfg.text_steps,
            "final_text_loss": text_history[-1]["text_loss"] if text_history else None,
            "eval": evals["report"],
            "eval_detect": evals["detect"],
            **({"eval_passages": evals["passages"]} if "passages" in evals else {}),
            **({"eval_shifted": evals["shifted"]} if "shifted" in evals else {}),
            "torch": torch.__version__,
        }
        with atomic_output_dir(out_dirs[f]) as tmp:
            run.model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
            run.processor.save_pretrained(tmp)
            (tmp / "train_log.json").write_text(json.dumps(run.history + text_history, indent=1) + "\n")
            (tmp / "base_record.json").write_text(json.dumps(record, indent=2) + "\n")
        run.model.to(torch.float32)
        records[f] = record
    return records


def train_base(model, processor, family: str, cfg: BaseTrainConfig, out_dir: str | Path,
               device: str | None = None) -> dict:
    """`train_bases` for one family."""
    return train_bases({family: (model, processor)}, cfg, {family: out_dir}, device)[family]


def main(argv=None) -> None:
    """`python -m safetyvlm.train.pretrain --families qwen2_5_vl mllama --out DIR --set minutes=8 ...`:
    train (or continue, `--set init_from=models/shipped/{family}-tiny`) several bases side by side; the
    GPU runs that made the shipped bases are this command."""
    import argparse

    import yaml

    from safetyvlm.train.base import prepare_bases  # the base stage's module, which imports this one

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--families", nargs="+", default=["qwen2_5_vl", "mllama"])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--out", required=True, help="each family's base goes to OUT/<family>-<preset>")
    ap.add_argument("--params", default="params.yaml", help="base.train is read from here, then --set")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML", help="override a base.train key")
    ap.add_argument("--live", default=None, help="DVCLive curves under LIVE/<family> (default: OUT/live)")
    ap.add_argument("--no-live", action="store_true", help="no DVCLive curves (train_log.json still has them)")
    args = ap.parse_args(argv)
    train = dict(yaml.safe_load(Path(args.params).read_text())["base"]["train"])
    for item in args.set:
        key, _, value = item.partition("=")
        train[key] = yaml.safe_load(value)
    out = {f: Path(args.out) / f"{f}-{args.preset}" for f in args.families}
    records = prepare_bases(args.families, args.preset, out, train=train,
                            live_dir=None if args.no_live else (args.live or Path(args.out) / "live"))
    for f, r in records.items():
        print(json.dumps({"family": f, "samples": r["samples"], "total_samples": r.get("total_samples"),
                          "eval": {k: v for k, v in r["eval"].items() if k != "example_answer"},
                          **{key: {k: v for k, v in r[key].items() if k != "example_answer"}
                             for key in ("eval_detect", "eval_passages") if key in r}}))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
