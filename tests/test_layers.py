"""The library's layers point down: a module imports from its own layer and the layers below, never above.

The order is written once, here (README's layout section describes it); units of one layer may import each
other. Every import of a `safetyvlm` module counts, at the top of a module or inside a function alike."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A unit is a subpackage (`data`) or a top-level module (`parse`); `safetyvlm` is the package's
# own __init__.
LAYERS = [
    ("safetyvlm", "schema", "config", "io", "headline", "live"),  # the output contract and plumbing
    ("parse", "kb"),            # model text -> contract; the knowledge base
    ("data", "rag"),            # scenes, importers, datasets; retrieval
    ("model",),                 # the model zoo: presets, loader, processors, boxes, prompts, LoRA, generation
    ("answer",),                # model text -> report in image pixels; plain and two-pass answers
    ("eval",),                  # metrics, judges, report, the eval stage
    ("prefs",),                 # preference pairs and verifiable rewards
    ("train",),                 # the LoRA run under SFT, DPO and GRPO; base pretraining; distributed launch
    ("serve",),                 # the service and its packaging
    ("cli",),                   # the command line
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imported(package: str, source: str) -> list[tuple[int, str]]:
    """(line, safetyvlm module) of every import in `source`, at the top or in a function; `package`: the
    importing module's package, for relative imports."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "safetyvlm"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] == "safetyvlm":
                # `from safetyvlm import headline` imports the module safetyvlm.headline
                out += [(node.lineno, f"{base}.{a.name}" if base == "safetyvlm" else base) for a in node.names]
    return sorted(out)


def upward_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """The imports of `module` (whose text is `source`) from a layer above its own, one line each."""
    own = LAYER[unit_of(module)]
    package = module if is_package else module.rpartition(".")[0]
    return [f"{module}:{line} imports {target}, layer {LAYER[unit_of(target)]} ({unit_of(target)}), above its "
            f"own layer {own} ({unit_of(module)})"
            for line, target in imported(package, source) if LAYER.get(unit_of(target), -1) > own]


MODULES = sorted(SRC.joinpath("safetyvlm").rglob("*.py"))


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(p)) for p in MODULES}
    missing = sorted(units - set(LAYER))
    assert not missing, f"place these in LAYERS (tests/test_layers.py) and README's layout: {missing}"
    assert not set(LAYER) - units, f"LAYERS names units that do not exist: {sorted(set(LAYER) - units)}"


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_a_module_imports_only_its_own_layer_and_below(path):
    bad = upward_imports(module_name(path), path.read_text(), path.name == "__init__.py")
    assert not bad, "an import points up the layers (tests/test_layers.py LAYERS):\n" + "\n".join(bad)


def test_the_check_sees_an_upward_import_anywhere_in_a_module():
    """Not vacuous: an upward import inside a function, or through `from safetyvlm import ...`, is caught;
    the same imports from a higher layer are not."""
    source = ("from safetyvlm.schema import CATEGORIES\n"
              "def f():\n    from safetyvlm.eval.detection import match_image\n"
              "from safetyvlm import cli\n")
    bad = upward_imports("safetyvlm.model.boxes", source)
    assert [b.split()[2] for b in bad] == ["safetyvlm.eval.detection,", "safetyvlm.cli,"]
    assert bad[0].startswith("safetyvlm.model.boxes:3 ") and "layer 5 (eval), above its own layer 3 (model)" in bad[0]
    assert [b.split()[2] for b in upward_imports("safetyvlm.serve.analyzer", source)] == ["safetyvlm.cli,"]
    assert upward_imports("safetyvlm.cli", source) == []
