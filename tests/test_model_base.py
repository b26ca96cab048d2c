"""The base stage: shipped weights (hash-checked), a fresh base trained for a few real steps, records."""

import json
import shutil
from pathlib import Path

import pytest

from safetyvlm.model.presets import BASE_RECORD as RECORD
from safetyvlm.model.presets import base_model_path
from safetyvlm.train.base import copy_shipped, file_hashes, prepare_base, record_checkpoint

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "shipped"


@pytest.mark.parametrize("family", ["qwen2_5_vl", "mllama"])
def test_shipped_base_is_copied_after_its_hashes_check(family, tmp_path):
    record = copy_shipped(family, "tiny", tmp_path / "base", SHIPPED)
    assert record["family"] == family
    chain = [record]
    while "continued_from" in chain[-1]:
        chain.append(chain[-1]["continued_from"])
    assert any(r["device"].startswith("NVIDIA") for r in chain)  # the vision runs were on a GPU
    assert file_hashes(tmp_path / "base") == record["files"]
    assert base_model_path(tmp_path / "base") == str(tmp_path / "base")


def test_a_tampered_shipped_base_is_refused(tmp_path):
    root = tmp_path / "shipped"
    shutil.copytree(SHIPPED / "qwen2_5_vl-tiny", root / "qwen2_5_vl-tiny")
    (root / "qwen2_5_vl-tiny" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="config.json"):
        copy_shipped("qwen2_5_vl", "tiny", tmp_path / "base", root)
    assert not (tmp_path / "base").exists()


def test_a_missing_shipped_base_says_how_to_train_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="base.retrain: true"):
        prepare_base("mllama", "small", tmp_path / "base", shipped_root=tmp_path)


def test_a_local_checkpoint_is_recorded_not_copied(tmp_path):
    record = record_checkpoint(str(SHIPPED / "mllama-tiny"), "mllama", tmp_path / "base")
    assert [p.name for p in (tmp_path / "base").iterdir()] == [RECORD]
    assert record["source"] == "local" and len(record["config_sha256"]) == 64
    assert base_model_path(tmp_path / "base") == str((SHIPPED / "mllama-tiny").resolve())


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_5_vl", "mllama"])
def test_a_fresh_base_trains_a_few_real_steps_and_the_loss_falls(family, tmp_path):
    train = dict(minutes=5, max_steps=8, batch_size=4, workers=0, lr=2e-3, warmup_steps=2, log_every=1,
                 eval_images=2, eval_batch_size=2, max_new_tokens=24, text_steps=3, text_batch_size=4)
    record = prepare_base(family, "tiny", tmp_path / "base", retrain=True, train=train)
    log = json.loads((tmp_path / "base" / "train_log.json").read_text())
    losses = [h["loss"] for h in log if "loss" in h]
    assert record["steps"] == 8 and losses[-1] < losses[0]
    assert [h["text_step"] for h in log if "text_step" in h] == [1, 2, 3]
    assert record["files"] == file_hashes(tmp_path / "base")
    assert set(record["eval"]) >= {"name_f1", "f1", "precision", "recall", "mean_iou", "json_ok"}
