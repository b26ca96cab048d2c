"""The real path on a GPU: full-size random-init Qwen2.5-VL-7B / Llama-3.2-11B-Vision through the project's
own loader, finetune settings, preference trainers and generation; speed and memory per configuration.

    python benchmarks/gpu_real_path.py --family qwen2_5_vl --out OUT --configs train:vision_language:bf16:ckpt0:hf:bs4,...
    python benchmarks/gpu_real_path.py --preset tiny --device cpu --family qwen2_5_vl --out /tmp/b   # CPU smoke

The checkpoint is built once (`presets.build_full_checkpoint`: random init directly on the GPU in bf16,
saved as safetensors with the offline processor, no preset marker) and then loaded with
`loader.load_model` exactly as a downloaded checkpoint. Speed and memory do not depend on the weights'
values; generated lengths are forced (`min_new_tokens`). Each configuration runs in try/except under a
time cap; results are written to `OUT/<family>-<tag>.json` after every configuration.

Configuration names (comma-separated, run in order):
  matmul                                   the card's bf16 matmul rate (8192^3, median of 20)
  train:STRATEGY:bf16|4bit:ckpt0|ckpt1:hf|unsloth:bsN[:nohead][:vckpt][:prof][:liger][:packed][:compile][:rcompile]
                                           [:gbl][:offload][:adam8]
                                           SFT steps with finetune()'s settings; nohead: lm_head not
                                           trained; vckpt: Mllama vision layers checkpointed
                                           (model/memory.py); prof: one step under torch.profiler;
                                           liger: SFTConfig(use_liger_kernel=True); packed: Qwen's vision
                                           windows in one attention call (model/fast_path.py); compile:
                                           SFTConfig(torch_compile=True); rcompile: each decoder layer
                                           and vision block compiled on its own (compile_blocks, as
                                           finetune.compile); gbl: batches of similar lengths (the
                                           finetune's group_by_length); offload: TRL's activation
                                           offloading; adam8: optim paged_adamw_8bit
  gen:bf16|4bit:dynamic|static:bN[:prof][:fullgraph]   greedy generation, 128 new tokens forced; prof: one more
                                           run under torch.profiler (card busy share, kernels a token); fullgraph:
                                           the decode step compiled whole (an error names the graph break; only as
                                           the process's first static config: dynamo reuses a compiled step)
  dpo:bf16|4bit[:bsN][:ckpt] / grpo:...     steps of train.dpo's / train.grpo's trainers (LoRA v+l)
  census:bf16|4bit                         parameter bytes per module group and dtype after loading
  analyze:bN                               the service's Analyzer (what /analyze runs after decoding the
                                           upload) on N images in one batch, no retrieval, bf16
MFU = model FLOPs per token (4 x frozen params + 6 x trainable params: forward + input gradients, and
weight gradients only where trained; recomputation of checkpointing not counted) x real tokens per
second / the measured matmul rate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GEN_NEW_TOKENS = 128


class ConfigTimeout(Exception):
    pass


@contextlib.contextmanager
def time_cap(seconds: float):
    if not seconds or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise ConfigTimeout(f"config exceeded its {seconds:.0f} s cap")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def gib(x):
    return round(x / 2**30, 2)


def mem_reset(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def mem_peak(device) -> dict:
    import torch

    if not str(device).startswith("cuda"):
        return {}
    return {"peak_alloc_gib": gib(torch.cuda.max_memory_allocated()),
            "peak_reserved_gib": gib(torch.cuda.max_memory_reserved()),
            "alloc_now_gib": gib(torch.cuda.memory_allocated())}


# ------------------------------------------------------------------------------------------- data

def make_split(n: int, px: int, seed: int = 0):
    """Rendered rows (the synthetic source at px x px) as a `datasets.Dataset` with the real features."""
    from datasets import Dataset

    from safetyvlm.data.dataset import BuildReport, DatasetParams, build_rows, features, iter_examples

    params = DatasetParams(source="synthetic", seed=seed, sizes={"train": n, "valid": 0, "test": 0},
                           render={"width": px, "height": px}, shifted={})
    rows = build_rows(iter_examples(params), params, BuildReport())
    return Dataset.from_list(rows["train"], features=features())


def dpo_pairs(split, processor, family):
    """Pairs in the grpo-pairs stage's format: chosen = the target, rejected = the target's tools reversed
    with the boxes of another image (a plausible, wrong answer of about the same length)."""
    from datasets import Dataset

    from safetyvlm.model.boxes import model_frame
    from safetyvlm.model.prompts import assistant_message, build_messages, target_text
    from safetyvlm.train.sft import report_of

    frame = model_frame(family, processor)
    rows = list(split)
    out = []
    for i, row in enumerate(rows):
        other = rows[(i + 1) % len(rows)]
        chosen = target_text(report_of(row["instances"]), row["image"].size, frame)
        rejected = target_text(report_of(other["instances"]), row["image"].size, frame)
        out.append({"images": [row["image"]], "prompt": build_messages(), "chosen": [assistant_message(chosen)],
                    "rejected": [assistant_message(rejected)]})
    return Dataset.from_list(out)


# ------------------------------------------------------------------------------------------- bench

class Bench:
    def __init__(self, args):
        import torch

        self.args = args
        self.family = args.family
        self.device = args.device
        self.cuda = self.device.startswith("cuda")
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.file = self.out / f"{self.family}-{args.tag}.json"
        self.results = json.loads(self.file.read_text()) if self.file.exists() else []
        self.loaded = None  # (key, model, processor, info)
        self.matmul_tflops = args.matmul_tflops
        self.split = None
        self.ckpt = Path(args.ckpt)
        import transformers
        from packaging.version import Version

        # TRL 1.16 refuses assistant-only loss on vision data below transformers 5.18 (unsloth pins 5.17):
        # there the loss covers the prompt too (same FLOPs and memory, other loss values)
        self.assistant_only = Version(transformers.__version__) >= Version("5.18.0")
        self.env = {"python": platform.python_version(), "torch": torch.__version__,
                    "device_name": torch.cuda.get_device_name() if self.cuda else platform.processor() or "cpu"}
        for mod in ("transformers", "peft", "trl", "bitsandbytes", "unsloth", "datasets", "accelerate"):
            try:
                self.env[mod] = __import__(mod).__version__ if mod != "unsloth" or args.unsloth else None
            except Exception as e:  # noqa: BLE001
                self.env[mod] = f"unavailable: {type(e).__name__}"

    def save(self):
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1, default=str) + "\n")
        tmp.replace(self.file)

    def record(self, name, fn):
        print(f"=== {self.family} {name}", flush=True)
        start = time.perf_counter()
        row = {"family": self.family, "config": name, "preset": self.args.preset, "env": self.env}
        try:
            with time_cap(self.args.cap):
                row.update(fn() or {})
            row["ok"] = True
        except BaseException as e:  # noqa: BLE001  (a timeout, an OOM, anything: record and go on)
            if isinstance(e, KeyboardInterrupt):
                raise
            row.update(ok=False, error=f"{type(e).__name__}: {str(e)[:2000]}",
                       traceback=traceback.format_exc()[-4000:])
            print(row["error"], flush=True)
            self.unload()
        row["seconds"] = round(time.perf_counter() - start, 1)
        self.results.append(row)
        self.save()
        print(json.dumps({k: v for k, v in row.items() if k not in ("env", "traceback", "census", "history")},
                         default=str), flush=True)

    # ------------------------------------------------------------------ model handling
    def build(self):
        from safetyvlm.model.presets import build_full_checkpoint, build_preset

        if (self.ckpt / "config.json").exists():
            return {"built": False, "path": str(self.ckpt)}
        t = time.perf_counter()
        if self.args.preset == "full":
            build_full_checkpoint(self.family, self.ckpt, device=self.device,
                                  dtype="bfloat16" if self.cuda else "float32")
        else:
            build_preset(self.family, self.args.preset, out_dir=self.ckpt)
        size = sum(p.stat().st_size for p in self.ckpt.iterdir())
        return {"built": True, "build_seconds": round(time.perf_counter() - t, 1), "checkpoint_gib": gib(size)}

    def unload(self):
        import gc

        import torch

        self.loaded = None
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def model(self, quant: str, backend: str = "hf"):
        from safetyvlm.model.loader import load_model

        key = (quant, backend)
        if self.loaded and self.loaded[0] == key:
            return self.loaded[1:]
        self.unload()
        mem_reset(self.device)
        t = time.perf_counter()
        model, processor, info = load_model(
            str(self.ckpt), family=self.family, device=self.device, backend=backend,
            load_in_4bit=(quant == "4bit"), dtype="bfloat16" if self.cuda else "float32")
        sync(self.device)
        info = dict(info, load_seconds=round(time.perf_counter() - t, 1), **mem_peak(self.device))
        self.loaded = (key, model, processor, info)
        return model, processor, info

    def data(self, n):
        if self.split is None or len(self.split) < n:
            self.split = make_split(max(n, 32), self.args.image_px)
        return self.split.select(range(n))

    # ------------------------------------------------------------------ configs
    def matmul(self):
        import torch

        if not self.cuda:
            return {"tflops": None}
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(20):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            a @ b
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        self.matmul_tflops = 2 * 8192**3 / statistics.median(times) / 1e12
        return {"tflops": round(self.matmul_tflops, 1)}

    def census(self, quant):
        model, processor, info = self.model(quant)
        groups: dict[str, dict[str, int]] = {}
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            parts = name.split(".")
            g = ".".join(parts[:3] if parts[0] == "model" and parts[1] == "language_model" else parts[:2])
            g = g if "layers" not in g else ".".join(parts[:2])
            d = groups.setdefault(g, {})
            d[str(t.dtype)] = d.get(str(t.dtype), 0) + t.numel() * t.element_size()
        census = {g: {k: gib(v) for k, v in d.items()} for g, d in sorted(groups.items())}
        return {"census_gib": census, "load": {k: info[k] for k in ("load_seconds", "parameters") if k in info},
                **mem_peak(self.device)}

    def train(self, strategy, quant, ckpt, backend, bs, head=True, steps=None, liger=False, prof=False,
              vckpt=False, packed=False, compile=False, rcompile=False, gbl=False, offload=False, adam8=False):
        import torch
        from peft import get_peft_model
        from transformers import TrainerCallback
        from trl import SFTConfig, SFTTrainer

        from safetyvlm.model.fast_path import compile_blocks
        from safetyvlm.model.lora import count_lora_layers, make_lora_config
        from safetyvlm.train.sft import FinetuneConfig, sft_dataset

        steps = steps or self.args.steps
        cfg = FinetuneConfig(backend=backend, r=16, alpha=32, dropout=0.0, lr=2e-4, steps=steps,
                             batch_size=bs, warmup_steps=0, load_in_4bit=quant == "4bit",
                             gradient_checkpointing=ckpt, train_lm_head=head, rag_fraction=0.0)
        model, processor, info = self.model(quant, backend)
        extra = {"modules_to_save": ["lm_head"]} if cfg.train_lm_head else {}
        if packed:
            from safetyvlm.model.fast_path import use_packed_vision_attention

            if not use_packed_vision_attention(model):
                raise ValueError("packed: only Qwen2.5-VL under sdpa/eager attention")
            self._dirty = True  # the vision tower's attention changed: reload the base for the next config
        vision_attention = getattr(getattr(model.config, "vision_config", None), "_attn_implementation", None)
        if backend == "unsloth":
            from unsloth import FastVisionModel

            model = FastVisionModel.get_peft_model(
                model, finetune_vision_layers=strategy != "language",
                finetune_language_layers=strategy != "vision", r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0,
                use_gradient_checkpointing="unsloth" if ckpt else False)
            FastVisionModel.for_training(model)
        else:
            model = get_peft_model(model, make_lora_config(self.family, strategy, cfg.r, cfg.alpha, cfg.dropout,
                                                           **extra))
        peft_model = model
        compiled_blocks = compile_blocks(model) if rcompile else 0
        vision_ckpt_layers = 0
        if vckpt:
            from safetyvlm.model.memory import checkpoint_mllama_vision

            vision_ckpt_layers = checkpoint_mllama_vision(model)
            self._dirty = True  # the wrapped forwards stay on the base: reload it for the next config
        try:
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in model.parameters())
            if quant == "4bit":  # Params4bit count packed bytes: use the unquantised count
                total = info["parameters"]["total"] if info["parameters"]["total"] > total else total
                total = max(total, self._full_params())
            layers = count_lora_layers(model) if backend == "hf" else None
            train = sft_dataset(self.data(bs * steps), processor, self.family)
            mem_reset(self.device)
            times, tokens, padded = [], [], []

            profile = {}
            warmup = self.args.warmup

            class Timer(TrainerCallback):
                def on_step_begin(self_, args, state, control, **kw):
                    sync(self.device)
                    self_.prof = None
                    if prof and len(times) == warmup:
                        self_.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]
                                                            + ([torch.profiler.ProfilerActivity.CUDA]
                                                               if self.cuda else []))
                        self_.prof.__enter__()
                    self_.t = time.perf_counter()

                def on_step_end(self_, args, state, control, **kw):
                    sync(self.device)
                    times.append(time.perf_counter() - self_.t)
                    if self_.prof is not None:
                        self_.prof.__exit__(None, None, None)
                        profile.update(profile_summary(self_.prof, times[-1]))

            extra_args = {"use_liger_kernel": True} if liger else {}
            if compile:
                extra_args["torch_compile"] = True
            if offload:
                extra_args["activation_offloading"] = True
            if adam8:
                extra_args["optim"] = "paged_adamw_8bit"
            args = SFTConfig(**extra_args,
                output_dir=str(self.out / "trainer"), max_steps=cfg.steps,
                per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
                learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps,
                logging_steps=1, save_strategy="no", report_to=[], use_cpu=not self.cuda, bf16=self.cuda,
                seed=cfg.seed, max_length=None, assistant_only_loss=self.assistant_only,
                gradient_checkpointing=cfg.gradient_checkpointing, dataloader_num_workers=0, disable_tqdm=True,
                train_sampling_strategy="group_by_length" if gbl else "random", length_column_name="length",
                remove_unused_columns=False,
            )
            trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=processor,
                                 callbacks=[Timer()])
            collate = trainer.data_collator

            def counting(batch):
                out = collate(batch)
                tokens.append(int(out["attention_mask"].sum()))
                padded.append(int(out["input_ids"].numel()))
                return out

            trainer.data_collator = counting
            hooks = self._mem_hooks(model) if self.cuda else None
            trainer.train()
            if hooks:
                for h in hooks[0]:
                    h.remove()
            peak = mem_peak(self.device)
            losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            measured = times[self.args.warmup:] or times
            s_step = statistics.median(measured)
            tok = statistics.mean(tokens)
            flops_tok = 4 * (total - trainable) + 6 * trainable
            res = {
                "strategy": strategy, "quant": quant, "grad_ckpt": ckpt, "backend": info["backend"],
                "batch": bs, "train_lm_head": head, "assistant_only_loss": self.assistant_only, "steps": len(times), "s_per_step": round(s_step, 3),
                "step_times": [round(t, 3) for t in times], "tokens_per_step": round(tok, 1),
                "padded_tokens_per_step": round(statistics.mean(padded), 1),
                "tokens_per_s": round(tok / s_step, 1), "trainable_parameters": trainable,
                "total_parameters": total, "lora_layers": layers, "flops_per_token": flops_tok,
                "loss_first_last": [losses[0], losses[-1]] if losses else None,
                "load_seconds": info.get("load_seconds"), "after_load_gib": info.get("alloc_now_gib"), **peak,
            }
            if liger:
                res["liger"] = True
            res["vision_attention"] = vision_attention  # what the run used, read from the model
            if compile:
                res["torch_compile"] = True
            if rcompile:
                res["compiled_blocks"] = compiled_blocks
            res.update({k: True for k, v in (("group_by_length", gbl), ("activation_offloading", offload),
                                             ("optim_paged_adamw_8bit", adam8)) if v})
            if vckpt:
                res["vision_ckpt_layers"] = vision_ckpt_layers
            if profile:
                res["profile"] = profile
            if hooks:
                res["activation_gib_by_module"] = {k: v for k, v in hooks[1].items() if not k.endswith("_in")}
            if self.matmul_tflops:
                res["tflops"] = round(flops_tok * tok / s_step / 1e12, 1)
                res["mfu"] = round(flops_tok * tok / s_step / 1e12 / self.matmul_tflops, 4)
            return res
        finally:
            self._strip(peft_model, backend)

    def _full_params(self):
        from safetyvlm.model.presets import count_config_parameters
        from transformers import AutoConfig

        if not hasattr(self, "_nparams"):
            self._nparams = count_config_parameters(AutoConfig.from_pretrained(self.ckpt))["total"]
        return self._nparams

    def _mem_hooks(self, model):
        """memory_allocated growth across each tower's forward in the first step: where activations live.
        Returns (handles, dict filled during training)."""
        import torch

        seen: dict[str, float] = {}
        handles = []
        names = ("visual", "vision_model", "multi_modal_projector", "language_model", "lm_head")
        done = set()
        for name, mod in model.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in names or leaf in done:
                continue
            done.add(leaf)

            def pre(m, a, key=leaf):
                seen.setdefault(key + "_in", torch.cuda.memory_allocated())

            def post(m, a, o, key=leaf):
                if key not in seen:
                    seen[key] = gib(torch.cuda.memory_allocated() - seen[key + "_in"])

            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
        return handles, seen

    def _strip(self, model, backend):
        """Back to the plain base model for the next configuration (or drop it)."""
        if backend != "hf" or self.args.reload or getattr(self, "_dirty", False):
            self._dirty = False
            self.unload()
            return
        try:
            base = model.unload()
            if hasattr(base, "gradient_checkpointing_disable"):
                base.gradient_checkpointing_disable()
            key, _, proc, info = self.loaded
            self.loaded = (key, base, proc, info)
        except Exception:  # noqa: BLE001
            self.unload()
        import gc

        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()

    def gen(self, quant, cache, b, prof=False, fullgraph=False):
        import torch
        from torch._dynamo.utils import counters
        from transformers import CompileConfig

        from safetyvlm.model.generate import no_cudnn_attention, prompt_texts, stop_token_ids

        model, processor, info = self.model(quant)
        model.eval()
        images = [r["image"].convert("RGB") for r in self.data(b)]
        tok = processor.tokenizer
        tok.padding_side = "left"
        texts = prompt_texts(processor, [None] * b)
        inputs = processor(images=[[im] for im in images], text=texts, padding=True, add_special_tokens=False,
                           return_tensors="pt").to(self.device)
        if "pixel_values" in inputs and model.dtype.is_floating_point:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        stops = stop_token_ids(model, processor)
        n = self.args.gen_tokens
        kw = dict(do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id)
        if cache == "static":
            kw["cache_implementation"] = "static"
            if fullgraph:  # transformers' default compiles with graph breaks allowed (mode reduce-overhead)
                kw["compile_config"] = CompileConfig(fullgraph=True)
        counters.clear()
        mem_reset(self.device)
        with torch.inference_mode(), no_cudnn_attention(self.cuda):
            t = time.perf_counter()
            model.generate(**inputs, max_new_tokens=n if cache == "static" else 8,
                           min_new_tokens=n if cache == "static" else 8, **kw)
            sync(self.device)
            warm = time.perf_counter() - t
            runs = []
            for _ in range(2 if cache == "static" else 1):
                t = time.perf_counter()
                out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, **kw)
                sync(self.device)
                runs.append(time.perf_counter() - t)
            # the prefill alone (image encoding + prompt + the first token), to separate decode speed
            prefill = []
            for _ in range(3):
                t = time.perf_counter()
                model.generate(**inputs, max_new_tokens=1, min_new_tokens=1, **kw)
                sync(self.device)
                prefill.append(time.perf_counter() - t)
            profile = {}
            if prof:  # one more generate under the profiler: how busy the card is, kernels a decode step
                kinds = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
                with torch.profiler.profile(activities=kinds) as p:
                    t = time.perf_counter()
                    model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, **kw)
                    sync(self.device)
                profile = profile_summary(p, time.perf_counter() - t)
                profile["kernels_per_token"] = round(profile["kernels"] / n, 1)
        new = out.shape[1] - inputs["input_ids"].shape[1]
        secs = min(runs)
        first = min(prefill)
        return {"quant": quant, "cache": cache, "batch": b, "prompt_tokens": int(inputs["input_ids"].shape[1]),
                "new_tokens": int(new), "gen_seconds": round(secs, 2), "warmup_seconds": round(warm, 1),
                "tokens_per_s": round(b * new / secs, 1), "runs": [round(r, 2) for r in runs],
                "prefill_seconds": round(first, 3),
                # decode rate: tokens after the first over the time after the prefill
                "decode_tokens_per_s": round(b * (new - 1) / max(secs - first, 1e-9), 1),
                "ms_per_decode_step": round(1e3 * (secs - first) / max(new - 1, 1), 2),
                # why the compiled step is not one CUDA graph, if it is not: dynamo's breaks, inductor's skips
                "graph_breaks": dict(counters["graph_break"]),
                "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
                **mem_peak(self.device), **({"profile": profile} if profile else {})}

    def analyze(self, b):
        """The service's model side (`serve.analyzer.Analyzer`, what `/analyze` calls after decoding the
        upload): load as the service does, answer `b` images in one batch without retrieval."""
        from safetyvlm.serve.analyzer import Analyzer
        from safetyvlm.serve.config import ServeConfig

        self.unload()
        mem_reset(self.device)
        an = Analyzer(ServeConfig(model=str(self.ckpt), device=self.device, dtype="bfloat16" if self.cuda else "float32",
                                  max_new_tokens=self.args.gen_tokens, max_batch_size=max(b, 8)))
        images = [r["image"].convert("RGB") for r in self.data(b)]
        try:
            an.analyze(images, [False] * b, [None] * b)  # warm-up
            times = []
            for _ in range(3):
                t = time.perf_counter()
                answers = an.analyze(images, [False] * b, [None] * b)
                sync(self.device)
                times.append(time.perf_counter() - t)
            new = [len(an.processor.tokenizer(a.raw_text, add_special_tokens=False)["input_ids"]) for a in answers]
            med = statistics.median(times)
            return {"batch": b, "retrieval": False, "latency_ms": round(1e3 * med, 1),
                    "ms_per_image": round(1e3 * med / b, 1), "runs_ms": [round(1e3 * t, 1) for t in times],
                    "new_tokens_mean": round(statistics.mean(new), 1), "max_new_tokens": self.args.gen_tokens,
                    "load_seconds": an.load_seconds, **mem_peak(self.device)}
        finally:
            del an
            self.unload()

    def prefs(self, method, quant, bs=None, ckpt=False):
        from transformers import TrainerCallback

        from safetyvlm.train.dpo import DPOParams, DPORun
        from safetyvlm.train.grpo import GRPOParams, GRPORun
        from safetyvlm.train.preferences import PrefsConfig
        from safetyvlm.train.run import extend_cross_attention_mask, logged_steps

        model, processor, info = self.model(quant)
        steps = self.args.pref_steps
        cfg = PrefsConfig(method=method, strategy="vision_language", r=16, alpha=32, log_every=1,
                          dpo=DPOParams(steps=steps, batch_size=bs or 4, lr=5e-5),
                          grpo=GRPOParams(steps=steps, batch_size=8, num_generations=4,
                                          max_completion_length=self.args.grpo_len, prompts=16))
        if self.family == "mllama":
            extend_cross_attention_mask(model)
            if ckpt:
                from safetyvlm.model.memory import checkpoint_mllama_vision

                checkpoint_mllama_vision(model)
        split = self.data(16)
        mem_reset(self.device)
        times = []

        class Timer(TrainerCallback):
            def on_step_begin(self_, args, state, control, **kw):
                sync(self.device)
                self_.t = time.perf_counter()

            def on_step_end(self_, args, state, control, **kw):
                sync(self.device)
                times.append(time.perf_counter() - self_.t)

        # the stage's DPO / GRPO run, its trainer built over the model loaded here (bf16 or 4-bit)
        run = (DPORun(self.ckpt, self.family, cfg, self.out, dpo_pairs(split, processor, self.family),
                      gradient_checkpointing=ckpt) if method == "dpo"
               else GRPORun(self.ckpt, self.family, cfg, self.out, split, gradient_checkpointing=ckpt))
        run.processor, run.cuda = processor, self.cuda
        trainer, data_info = run.build_trainer(model, self.out)
        trainer.add_callback(Timer())
        try:
            trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            trainer.train()
            hist = logged_steps(trainer)
            measured = times[1:] or times
            return {"method": method, "quant": quant, "grad_ckpt": ckpt, "steps": len(times), "s_per_step": round(statistics.median(measured), 3),
                    "step_times": [round(t, 2) for t in times], "trainable_parameters": trainable,
                    "batch": (bs or 4) if method == "dpo" else 8,
                    "completion_length": self.args.grpo_len if method == "grpo" else None,
                    "history": hist[-3:], **mem_peak(self.device)}
        finally:
            self.unload()  # hooks / adapters: start clean

    def run(self, name):
        parts = name.split(":")
        kind = parts[0]
        if kind == "matmul":
            return self.record(name, self.matmul)
        if kind == "build":
            return self.record(name, self.build)
        if kind == "census":
            return self.record(name, lambda: self.census(parts[1]))
        if kind == "train":
            _, strategy, quant, ck, backend, bs, *rest = parts
            return self.record(name, lambda: self.train(strategy, quant, ck == "ckpt1", backend, int(bs[2:]),
                                                        head="nohead" not in rest, liger="liger" in rest,
                                                        prof="prof" in rest, vckpt="vckpt" in rest,
                                                        packed="packed" in rest, compile="compile" in rest,
                                                        rcompile="rcompile" in rest, gbl="gbl" in rest,
                                                        offload="offload" in rest, adam8="adam8" in rest))
        if kind == "analyze":
            return self.record(name, lambda: self.analyze(int(parts[1][1:])))
        if kind == "gen":
            return self.record(name, lambda: self.gen(parts[1], parts[2], int(parts[3][1:]),
                                                      prof="prof" in parts[4:], fullgraph="fullgraph" in parts[4:]))
        if kind in ("dpo", "grpo"):
            bs = next((int(p[2:]) for p in parts[2:] if p.startswith("bs")), None)
            return self.record(name, lambda: self.prefs(kind, parts[1], bs, ckpt="ckpt" in parts[2:]))
        raise ValueError(f"unknown config {name!r}")


def profile_summary(prof, step_seconds: float) -> dict:
    """One profiled step: GPU kernel time vs wall time (how busy the card was), kernel count, and the
    kernels that took the most time grouped into matmul / attention / elementwise+other."""
    events = [e for e in prof.key_averages() if getattr(e, "device_type", None) is not None
              and str(e.device_type).endswith("CUDA") and e.self_device_time_total > 0]
    total_us = sum(e.self_device_time_total for e in events)
    launches = sum(e.count for e in events)
    groups = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for e in events:
        n = e.key.lower()
        g = ("matmul" if any(k in n for k in ("gemm", "cutlass", "sm90_xmma", "nvjet", "cublas", "matmul"))
             else "attention" if any(k in n for k in ("flash", "fmha", "attention", "sdpa")) else "other")
        groups[g] += e.self_device_time_total
    top = sorted(events, key=lambda e: -e.self_device_time_total)[:15]
    return {"step_seconds": round(step_seconds, 3), "gpu_kernel_seconds": round(total_us / 1e6, 3),
            "gpu_busy": round(total_us / 1e6 / step_seconds, 3), "kernels": launches,
            "seconds_by_group": {k: round(v / 1e6, 3) for k, v in groups.items()},
            "top": [{"name": e.key[:90], "ms": round(e.self_device_time_total / 1e3, 1), "count": e.count}
                    for e in top]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="qwen2_5_vl", choices=("qwen2_5_vl", "mllama"))
    ap.add_argument("--preset", default="full", help="full (the real layout) or tiny/small (CPU smoke)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="run")
    ap.add_argument("--ckpt", default=None, help="checkpoint dir (built here if missing)")
    ap.add_argument("--configs", default="matmul,build,train:vision_language:bf16:ckpt0:hf:bs4")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of s/step")
    ap.add_argument("--pref-steps", type=int, default=3)
    ap.add_argument("--grpo-len", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=GEN_NEW_TOKENS)
    ap.add_argument("--image-px", type=int, default=448)
    ap.add_argument("--cap", type=float, default=240, help="seconds per configuration")
    ap.add_argument("--matmul-tflops", type=float, default=None)
    ap.add_argument("--unsloth", action="store_true", help="import unsloth first (it patches transformers)")
    ap.add_argument("--reload", action="store_true", help="reload the base for every configuration")
    args = ap.parse_args(argv)
    args.ckpt = args.ckpt or f"/tmp/ckpt-{args.family}-{args.preset}"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.unsloth:
        import unsloth  # noqa: F401
    import logging

    logging.basicConfig(level=logging.WARNING)
    bench = Bench(args)
    for name in [c for c in args.configs.split(",") if c]:
        bench.run(name)
    print("\n| config | ok | s/step | tok/s | MFU | peak GiB | note |")
    for r in bench.results:
        print(f"| {r['config']} | {r['ok']} | {r.get('s_per_step', '')} | {r.get('tokens_per_s', '')} | "
              f"{r.get('mfu', '')} | {r.get('peak_alloc_gib', '')} | {r.get('error', '')[:80]} |")
    return bench


if __name__ == "__main__":
    main()
