"""The DVC pipeline as a user runs it: `dvc repro` in a fresh git repo, then a no-op second run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from project_copy import copy_project

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture()
def project(tmp_path):
    """A copy of the project (pipeline, stages, library) in a new git + dvc repo, with small sizes."""
    copy_project(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(tmp_path / "src")}
    run(["git", "init", "-q"], tmp_path, env)
    run(["dvc", "init", "-q"], tmp_path, env)
    run(["dvc", "config", "core.analytics", "false"], tmp_path, env)
    return tmp_path, env


@pytest.mark.slow
def test_dvc_repro_builds_the_dataset_and_a_second_run_does_nothing(project):
    path, env = project
    out = run(["dvc", "repro", "dataset"], path, env)
    sizes = yaml.safe_load((path / "params.yaml").read_text())["dataset"]
    total = sum(sizes["sizes"].values()) + sizes.get("shifted", {}).get("size", 0)  # + the shifted test split
    assert f"dataset: {total} images" in out
    assert (path / "data/dataset/dataset_dict.json").exists()
    assert (path / "metrics/dataset.json").exists()
    again = run(["dvc", "repro", "dataset"], path, env)
    assert "Running stage" not in again
    assert "up to date" in run(["dvc", "status", "dataset"], path, env)


@pytest.mark.slow
def test_the_base_stage_copies_the_shipped_base(project):
    path, env = project
    out = run(["dvc", "repro", "base@mllama"], path, env)
    assert '"family": "mllama"' in out
    assert (path / "models/base/mllama/model.safetensors").exists()
    assert "Running stage" not in run(["dvc", "repro", "base@mllama"], path, env)


@pytest.mark.slow
def test_the_real_photo_fixture_imports_through_the_stage(project):
    path, env = project
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["dataset"].update(source="yolo", path=str(ROOT / "tests/fixtures/real-tools"))
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro", "dataset"], path, env)
    metrics = yaml.safe_load((path / "metrics/detail/dataset.json").read_text())
    # 18 photos; Files/Scissors/Pincers are mapped to null in params.yaml and counted as ignored
    assert metrics["total"]["images"] == 18, out
    assert metrics["ignored_classes"] == {"Files": 3, "Scissors": 2}
    assert metrics["splits"]["test"]["per_class"]["Screwdriver"] == 4
    assert metrics["splits"]["valid"]["per_class"]["Wrench"] == 4


def test_the_graph_has_every_stage_and_a_method_change_only_touches_training_and_eval():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stages = spec["stages"]
    assert {"dataset", "rag-index", "base", "finetune", "grpo-pairs", "grpo", "eval"} <= set(stages)
    params_of = {name: [p for p in (s.get("do", s).get("params") or [])] for name, s in stages.items()}
    # grpo.method picks the trainer: the pairs do not depend on it, the training stage does
    assert "grpo" not in params_of["grpo-pairs"] and "grpo.method" not in params_of["grpo-pairs"]
    assert "grpo.method" in params_of["grpo"]
    assert not any(p.startswith("grpo") for p in params_of["finetune"] + params_of["eval"])
    # eval reads the final models, so it follows a change of method through its dependency
    assert "models/final" in stages["eval"]["deps"]
    plots = [next(iter(p)) if isinstance(p, dict) else p for p in spec["plots"]]
    assert "plots/eval/confusion" in plots and "plots/eval/judge_radar.png" in plots
