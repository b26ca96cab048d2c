"""A copy of the project's pipeline (dvc.yaml, params, stages, library, shipped bases) for DVC tests."""

import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY_SIZES = {"train": 12, "valid": 4, "test": 4}


def copy_project(dest: Path, extra_files: tuple[str, ...] = ()) -> Path:
    """Copy what `dvc repro` needs into `dest`, with the dataset cut to `TINY_SIZES`."""
    for name in ("dvc.yaml", "params.yaml", "pyproject.toml", *extra_files):
        shutil.copy(ROOT / name, dest / name)
    for name in ("stages", "src", "data/raw", "models/shipped"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["dataset"]["sizes"] = dict(TINY_SIZES)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest
