"""The metrics DVC shows: few shared keys per stage, the full documents beside them in metrics/detail/."""

import json
import os
import subprocess
import sys
from pathlib import Path

from safetyvlm import headline

ROOT = Path(__file__).resolve().parents[1]


def test_eval_rows_become_one_small_file_each_and_stale_rows_go(tmp_path):
    row = {"json_valid": 0.84, "name_f1": 0.6002460024, "f1": 0.4969, "mean_iou": 0.787, "precision": 0.5,
           "safety_agreement": 0.97, "claim_hallucination": None, "per_class": {"Hammer": {"f1": 1.0}},
           "example_answer": "{...}"}
    (tmp_path / "qwen2_5_vl").mkdir()
    (tmp_path / "qwen2_5_vl" / "old-row.json").write_text("{}")
    written = headline.write_eval_rows({"qwen2_5_vl": {"ft vision+language · shifted": row}}, tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == ["qwen2_5_vl/ft-vision-language-shifted.json"]
    assert json.loads(written[0].read_text()) == {"json": 0.84, "name_f1": 0.6, "det_f1": 0.497, "iou": 0.787,
                                                  "safety": 0.97, "halluc": None}
    assert not (tmp_path / "qwen2_5_vl" / "old-row.json").exists()


def test_each_stage_headline_takes_its_numbers_from_the_full_document():
    ft = {"final_loss": 0.12345, "train_seconds": 300.0,
          "valid": {"json_valid": 0.5, "name_f1": 0.4, "f1": 0.3, "mean_iou": 0.7,
                    "safety_agreement": {"required_ppe": 0.9, "mean": 0.8}}}
    assert headline.finetune(ft) == {"json": 0.5, "name_f1": 0.4, "det_f1": 0.3, "iou": 0.7, "safety": 0.8,
                                     "loss": 0.123}
    assert headline.preference({"last": {"loss": 0.02, "rewards/margins": 6.6449}}) == {"loss": 0.02,
                                                                                       "margin": 6.645}
    assert headline.preference({"last": {"loss": 0.0, "reward": 1.5}})["margin"] == 1.5  # GRPO: mean reward
    assert headline.preference({"trained": False, "last": {}}) == {"loss": None, "margin": None}
    assert headline.pairs({"kept": 14, "images": 200}) == {"pairs": 14}
    assert headline.rag({"recall@5": 0.97912, "mrr": 1.0, "by_rerank": {}}) == {"recall@5": 0.979, "mrr": 1.0}
    assert headline.dataset({"total": {"images": 2600, "boxes": 5198}}) == {"images": 2600, "boxes": 5198}


def test_dvc_metrics_show_of_the_committed_metrics_fits_200_columns():
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    lines = out.splitlines()
    assert any(line.startswith("metrics/eval/qwen2_5_vl/zero-shot.json") for line in lines)
    assert len(lines) > 20 and max(map(len, lines)) <= 200, max(lines, key=len)
