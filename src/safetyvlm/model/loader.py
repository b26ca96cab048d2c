"""The one model loader: preset dir, local checkpoint or hub id -> (model, processor, info).

Every choice is made here and logged with its reason, and `info` records it:

* source: a directory with `config.json` (a preset built by `presets.build_preset`, marked by
  `safetyvlm_preset.json`, or any local checkpoint), else a hub id (`org/name`) that must already be in
  the local Hugging Face cache. Nothing is downloaded unless `allow_download=True` *and* `HF_HUB_OFFLINE`
  is unset; otherwise an uncached hub id raises `HubUnreachableError` saying how to pass a local path.
* family: `config.model_type` (`qwen2_5_vl` or `mllama`); a `family=` argument must agree with it.
* device/dtype: "auto" = CUDA with bf16 (fp16 without bf16 support) when present, else CPU fp32.
* 4-bit: NF4 via `BitsAndBytesConfig`, only with CUDA and an importable bitsandbytes; otherwise
  `QuantizationUnavailableError` naming what is missing.
* backend: "hf" (transformers), "unsloth" (`FastVisionModel`; `BackendUnavailableError` when it cannot
  be imported or refuses the machine) or "auto" (`choose_backend`: unsloth only if CUDA is present and
  unsloth imports; if its load then fails the loader falls back to hf and says why).
* on CUDA the cuDNN scaled-dot-product-attention backend is switched off process-wide
  (`torch.backends.cuda.enable_cudnn_sdp(False)`; `info["cudnn_sdp"]`): it re-plans for every new
  sequence length. Measured on an H100 (torch 2.11, tiny presets, bf16): training steps of batch 32
  with varying lengths took 0.28 s (Qwen) / 0.31 s (Mllama) with it and 0.12 s / 0.04 s without;
  batched generation with varying prompts was 7-15x slower with it (`generate.py`). Training loops
  that do not load through here should call `torch.backends.cuda.enable_cudnn_sdp(False)` too.
  Pass `cudnn_sdp=True` to keep it.
* the processor class is chosen per family (`processors.load_processor`), so it works without
  torchvision for presets and hub checkpoints alike.

`use_safetensors=True` and `trust_remote_code=False` by default.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path

from safetyvlm.model import processors as _processors  # noqa: F401  (registers the Qwen processor)
from safetyvlm.model.boxes import model_frame
from safetyvlm.model.presets import PRESET_FILE, count_parameters
from safetyvlm.model.processors import load_processor
from safetyvlm.model.tokenizer import FAMILIES

log = logging.getLogger(__name__)

BACKENDS = ("hf", "unsloth", "auto")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do instead."""


class HubUnreachableError(ModelLoadError):
    pass


class QuantizationUnavailableError(ModelLoadError):
    pass


class BackendUnavailableError(ModelLoadError):
    pass


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_source(name_or_path: str | os.PathLike, *, allow_download: bool = False) -> tuple[Path, str]:
    """(local directory, source kind) with kind in preset/local/hub-cache/hub-download."""
    raw = str(name_or_path)
    path = Path(raw).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory but has no config.json: not a model checkpoint")
        return path, ("preset" if (path / PRESET_FILE).is_file() else "local")
    if not _HUB_ID.match(raw) or raw.startswith((".", "/", "~")):
        raise ModelLoadError(f"{raw!r} is neither an existing directory nor a hub id of the form 'org/name'")

    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(raw, local_files_only=True)), "hub-cache"
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    offline = hub_offline()
    if allow_download and not offline:
        log.info("downloading %s from the hub (allow_download=True)", raw)
        return Path(snapshot_download(raw)), "hub-download"
    why = ("HF_HUB_OFFLINE is set, so the hub is unreachable" if offline
           else "the hub is treated as unreachable (allow_download=False, nothing is fetched)")
    raise HubUnreachableError(
        f"{raw!r} is no directory here and not in the local Hugging Face cache ({constants.HF_HUB_CACHE}), "
        f"and cannot be fetched: {why}. Download it where the hub is reachable with the `hf` command that "
        f"huggingface_hub installs (`hf download {raw}` fills that cache; `hf download {raw} --local-dir DIR` "
        f"writes DIR: copy it here and pass its local path), or pass a preset directory built with "
        f"safetyvlm.model.presets.build_preset."
    )


def read_family(path: Path, family: str | None = None) -> str:
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type not in FAMILIES:
        raise ModelLoadError(f"{path}: model_type {model_type!r} is not supported; expected one of {FAMILIES}")
    if family is not None and family != model_type:
        raise ModelLoadError(f"{path}: family={family!r} was requested but config.model_type is {model_type!r}")
    return model_type


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device={device!r} but torch.cuda.is_available() is False")
    return str(device)


_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
           "half": "float16", "fp32": "float32", "float32": "float32", "float": "float32"}


def resolve_dtype(dtype, device: str):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return getattr(torch, _DTYPES[str(dtype).lower()])
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', bf16, fp16, fp32 or a torch.dtype") from None


def bnb_4bit_config(compute_dtype):
    """NF4 config, or QuantizationUnavailableError naming every missing requirement."""
    import importlib

    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    try:
        importlib.import_module("bitsandbytes")
    except Exception as e:  # ImportError, or a broken native library
        missing.append(f"bitsandbytes ({type(e).__name__}: {e}; install the `gpu` extra: "
                       f"pip install 'safetyvlm[gpu]')")
    if missing:
        raise QuantizationUnavailableError(
            "load_in_4bit=True needs " + " and ".join(missing) + ". Load without 4-bit instead "
            "(load_in_4bit=False), which works on CPU.")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def choose_backend(requested: str = "auto") -> tuple[str, str]:
    """(backend, reason). "auto" takes unsloth only if CUDA is available and unsloth imports."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; expected one of {BACKENDS}")
    if requested != "auto":
        return requested, f"{requested} requested explicitly"
    import torch

    if not torch.cuda.is_available():
        reason = "auto: no CUDA device (unsloth vision models need a GPU), using hf"
    else:
        try:
            import unsloth  # noqa: F401
        except (ImportError, NotImplementedError, RuntimeError) as e:
            reason = f"auto: unsloth is not importable ({type(e).__name__}: {e}), using hf"
        else:
            reason = "auto: CUDA available and unsloth importable, using unsloth"
            log.info(reason)
            return "unsloth", reason
    log.info(reason)
    return "hf", reason


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def refuse_pickle_only(path: Path) -> None:
    """Weights are read from safetensors only: a pickle checkpoint can run arbitrary code on load."""
    if any(path.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ModelLoadError(
            f"{path} holds weights only as pickle files ({', '.join(pickled)}); they are never loaded, "
            "since unpickling can run arbitrary code. Convert them to safetensors where you trust the source "
            "(e.g. load once and save_pretrained(..., safe_serialization=True)).")


def _load_hf(path: Path, *, device: str, torch_dtype, quant, use_safetensors: bool, trust_remote_code: bool):
    from transformers import AutoModelForImageTextToText

    kwargs = dict(dtype=torch_dtype, use_safetensors=use_safetensors, trust_remote_code=trust_remote_code,
                  local_files_only=True)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if device.startswith("cuda"):
        kwargs["device_map"] = {"": device}
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    if not device.startswith("cuda"):
        model.to(device)
    return model


def _load_unsloth(path: Path, *, torch_dtype, load_in_4bit: bool, trust_remote_code: bool):
    try:
        from unsloth import FastVisionModel

        model, processor = FastVisionModel.from_pretrained(
            str(path), dtype=torch_dtype, load_in_4bit=load_in_4bit, trust_remote_code=trust_remote_code,
        )
    except (ImportError, NotImplementedError) as e:
        raise BackendUnavailableError(
            f"the unsloth backend is unavailable here ({type(e).__name__}: {e}). Use backend='hf', or "
            f"backend='auto' which falls back to hf by itself.") from e
    return model, processor


def load_model(name_or_path, *, family: str | None = None, device: str = "auto", dtype="auto",
               load_in_4bit: bool = False, backend: str = "hf", allow_download: bool = False,
               use_safetensors: bool = True, trust_remote_code: bool = False, cudnn_sdp: bool = False):
    """Load a VLM and its processor. Returns (model, processor, info); see the module docstring."""
    path, source = resolve_source(name_or_path, allow_download=allow_download)
    if use_safetensors:
        refuse_pickle_only(path)
    family = read_family(path, family)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    chosen, reason = choose_backend(backend)
    if device.startswith("cuda") and not cudnn_sdp:
        import torch

        torch.backends.cuda.enable_cudnn_sdp(False)
        log.info("cuDNN SDPA backend disabled: it re-plans for every new sequence length")
    quant = bnb_4bit_config(torch_dtype) if (load_in_4bit and chosen == "hf") else None

    model = processor = None
    if chosen == "unsloth":
        try:
            model, processor = _load_unsloth(path, torch_dtype=torch_dtype, load_in_4bit=load_in_4bit,
                                             trust_remote_code=trust_remote_code)
        except BackendUnavailableError as e:
            if backend != "auto":
                raise
            chosen, reason = "hf", f"{reason}; but unsloth failed to load ({e}), falling back to hf"
            log.warning(reason)
            quant = bnb_4bit_config(torch_dtype) if load_in_4bit else None
    if model is None:
        model = _load_hf(path, device=device, torch_dtype=torch_dtype, quant=quant,
                         use_safetensors=use_safetensors, trust_remote_code=trust_remote_code)
    from transformers import ProcessorMixin

    if not isinstance(processor, ProcessorMixin):
        processor = load_processor(path, family, local_files_only=True)

    preset = None
    if (path / PRESET_FILE).is_file():
        preset = json.loads((path / PRESET_FILE).read_text())
    info = {
        "name": str(name_or_path), "path": str(path), "source": source, "family": family,
        "backend": chosen, "backend_reason": reason, "device": device,
        "dtype": str(torch_dtype).replace("torch.", ""), "load_in_4bit": bool(load_in_4bit),
        "parameters": count_parameters(model), "frame": asdict(model_frame(family, processor)),
        "cudnn_sdp": bool(cudnn_sdp) if device.startswith("cuda") else None,
        "preset": preset,
    }
    log.info("loaded %s (%s, %s) on %s as %s via %s: %s", name_or_path, family, source, device,
             info["dtype"], chosen, reason)
    return model, processor, info
