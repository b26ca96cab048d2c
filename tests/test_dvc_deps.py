"""dvc.yaml's dependencies match the code: every `safetyvlm` module a stage's script imports (directly or
through the modules it imports, at top level or inside functions) lies under one of the stage's deps, so
changing it reruns the stage; and the family list is written once."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def module_file(name: str) -> Path | None:
    """`safetyvlm.eval.report` -> src/safetyvlm/eval/report.py (or .../__init__.py for a package)."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] != "__init__" else parts[:-1])


@cache
def imported_modules(path: Path) -> frozenset[str]:
    """The safetyvlm modules `path` imports anywhere in its body (a `from X import y` names X.y when y is a
    submodule, else X)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "safetyvlm")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                pkg = _package_of(path).split(".")
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "safetyvlm":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if module_file(sub) else base)
    return frozenset(found)


def closure(script: Path) -> set[Path]:
    """Every source file that running `script` can import from safetyvlm, with the packages' __init__ files."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        for name in imported_modules(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                f = module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


def expanded_stages() -> dict[str, dict]:
    """dvc.yaml's stages with foreach / matrix expanded by DVC itself (`dvc.api`-free: the Repo's index)."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        out = {}
        for stage in repo.index.stages:
            out[stage.addressing] = {"cmd": stage.cmd, "deps": [str(Path(d.def_path)) for d in stage.deps]}
        return out


STAGES = expanded_stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_depends_on_every_module_its_script_imports(name):
    stage = STAGES[name]
    script = re.search(r"python (stages/\S+\.py)", stage["cmd"]).group(1)
    assert script in stage["deps"], f"{name}: its own script {script} is not a dep"
    deps = [ROOT / d for d in stage["deps"]]
    missing = sorted(str(f.relative_to(ROOT)) for f in closure(ROOT / script)
                     if not any(f == d or d in f.parents for d in deps))
    assert not missing, f"dvc.yaml stage {name} imports these but does not depend on them: {missing}"


def test_the_closure_sees_imports_inside_functions(tmp_path):
    """The check is only as good as the import graph: a lazy import inside a function counts."""
    files = closure(ROOT / "stages/finetune.py")
    assert SRC / "safetyvlm/rag/index.py" in files          # imported inside an `if` of the stage script
    assert SRC / "safetyvlm/live.py" in files               # imported by the LoRA run (train/run.py)
    assert SRC / "safetyvlm/model/loader.py" in files       # imported inside LoraRun.load()
    assert SRC / "safetyvlm/serve/service.py" not in files   # the service is no part of training


def test_the_family_list_is_written_once():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    text = (ROOT / "dvc.yaml").read_text()
    for family in params["families"]:
        # in dvc.yaml a family appears only in the top-level plots (DVC does not template them)
        stage_text = text.split("\nplots:\n")[0]
        assert family not in stage_text, f"dvc.yaml's stages spell out {family}: use ${{families}}"
    assert "families" not in params["eval"]  # the eval stage reads the top-level list
    families = {name.split("@")[1].split("-")[0] for name in STAGES if name.startswith("finetune@")}
    assert families == set(params["families"])
