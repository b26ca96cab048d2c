"""The `base` stage's logic: give the finetune a base model for one family.

- a preset (`tiny`, `small`): the shipped GPU-trained weights (`models/shipped/<family>-<preset>/`)
  are copied in after their hash is checked; with `retrain: true` the base is trained afresh here
  (`pretrain.train_base`) on whatever device is present;
- a hub id or a local checkpoint: resolved and recorded (config, weight hashes), never copied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from safetyvlm.io import atomic_output_dir
from safetyvlm.kb import load_kb
from safetyvlm.model.presets import BASE_RECORD, PRESET_NAMES, build_preset_parts
from safetyvlm.schema import ToolReport
from safetyvlm.train.pretrain import BaseTrainConfig, train_bases

log = logging.getLogger("safetyvlm.base")

SHIPPED_DIR = Path("models/shipped")
# Measured on the GPU run that made the shipped bases and on 2 CPU cores (see README): used only to
# tell a user how long `retrain` will take.
CPU_SAMPLES_PER_SECOND = 25.0


def tokenizer_texts() -> list[str]:
    """What the tokenizer should make short: every tool's safety fields as they appear in answers."""
    kb = load_kb()
    return [
        ToolReport(name=name, bbox_2d=[0, 0, 1, 1], **kb.safety_fields(name)).model_dump_json()
        for name in kb.tools
    ]


def file_hashes(path: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.iterdir())
        if p.is_file() and p.name != BASE_RECORD
    }


def shipped_path(family: str, preset: str, root: Path = SHIPPED_DIR) -> Path:
    return root / f"{family}-{preset}"


def copy_shipped(family: str, preset: str, out_dir: str | Path, root: Path = SHIPPED_DIR) -> dict:
    src = shipped_path(family, preset, root)
    record_file = src / BASE_RECORD
    if not record_file.exists():
        raise FileNotFoundError(
            f"no shipped base for {family}/{preset} at {src}. Set base.retrain: true to train one here "
            f"({estimate(family, preset)})."
        )
    record = json.loads(record_file.read_text())
    expected = record.get("files", {})
    actual = file_hashes(src)
    bad = sorted(k for k, v in expected.items() if actual.get(k) != v)
    if bad or not expected:
        raise ValueError(f"{src}: files do not match the hashes in {BASE_RECORD}: {bad or 'no hashes recorded'}")
    with atomic_output_dir(out_dir) as tmp:
        for p in src.iterdir():
            if p.is_file():
                shutil.copy2(p, tmp / p.name)
    return record


def estimate(family: str, preset: str, root: Path = SHIPPED_DIR) -> str:
    record_file = shipped_path(family, preset, root) / BASE_RECORD
    if record_file.exists():
        record = json.loads(record_file.read_text())
        samples = record.get("total_samples", record["samples"])
        minutes = samples / CPU_SAMPLES_PER_SECOND / 60
        return f"the shipped one saw {samples} samples: about {minutes:.0f} minutes on 2 CPU cores"
    return "minutes on a GPU, about an hour on 2 CPU cores for the tiny preset"


def record_checkpoint(name_or_path: str, family: str, out_dir: str | Path) -> dict:
    """A hub id or local checkpoint: resolve it, record what it is, copy nothing."""
    from safetyvlm.model.loader import read_family, resolve_source

    path, source = resolve_source(name_or_path)
    family = read_family(path, family)
    config = (path / "config.json").read_bytes()
    record = {
        "family": family,
        "name_or_path": name_or_path,
        "path": str(path.resolve()),
        "source": source,
        "config_sha256": hashlib.sha256(config).hexdigest(),
        "files": file_hashes(path),
    }
    with atomic_output_dir(out_dir) as tmp:
        (tmp / BASE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def prepare_bases(families: list[str], preset: str, out_dirs: dict, *, train: dict | None = None,
                  shipped_root: Path = SHIPPED_DIR, live_dir: str | Path | None = None) -> dict:
    """Train the `preset` bases of several families side by side (`pretrain.train_bases`), from scratch
    or continued from `train.init_from` (`{family}` is filled in), and record each one's provenance;
    `live_dir`: DVCLive curves under `live_dir/<family>`."""
    import torch

    cfg = BaseTrainConfig.from_dict(train or {})
    if not torch.cuda.is_available():
        log.warning("training the %s bases of %s on the CPU for %.0f minutes; for a base that sees, %s",
                    preset, ", ".join(families), cfg.minutes, estimate(families[0], preset, shipped_root))
    parts, previous = {}, {}
    for family in families:
        if cfg.init_from:
            from safetyvlm.model.loader import load_model

            src = Path(cfg.init_from.format(family=family))
            model, processor, _ = load_model(str(src), family=family, dtype="float32", device="cpu")
            prev_file = src / BASE_RECORD
            previous[family] = json.loads(prev_file.read_text()) if prev_file.exists() else None
        else:
            model, processor, _ = build_preset_parts(family, preset, tokenizer_texts())
        parts[family] = (model, processor)
    records = train_bases(parts, cfg, out_dirs, live_dir=live_dir)
    for family, record in records.items():
        prev = previous.get(family)
        if prev:
            record["continued_from"] = prev
            record["total_samples"] = record["samples"] + prev.get("total_samples", prev["samples"])
        record["preset"] = preset
        out = Path(out_dirs[family])
        record["files"] = file_hashes(out)
        (out / BASE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return records


def prepare_base(family: str, name_or_path: str, out_dir: str | Path, *, retrain: bool = False,
                 train: dict | None = None, shipped_root: Path = SHIPPED_DIR) -> dict:
    if name_or_path not in PRESET_NAMES:
        return record_checkpoint(name_or_path, family, out_dir)
    if not retrain:
        return copy_shipped(family, name_or_path, out_dir, shipped_root)
    return prepare_bases([family], name_or_path, {family: out_dir}, train=train,
                         shipped_root=shipped_root)[family]
