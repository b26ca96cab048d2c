"""The manual: a README that stays a manual, links that resolve, an example answer that is a real answer
for the committed image, and measured figures in docs/ that come from benchmarks/results/."""

import importlib.util
import json
import re
import shutil
from pathlib import Path

from safetyvlm.data.render import render_scene
from safetyvlm.schema import SafetyReport

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def _figures():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "benchmarks/docs_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_a_manual_not_a_lab_notebook():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for narration in ("this session", "session 3", "call 2", "measured here", "goals met"):
        assert narration not in text.lower(), narration
    for command in ("make repro", "make test", "make serve", "curl "):
        assert command in text
    makefile = (ROOT / "Makefile").read_text()
    assert all(re.search(rf"^{t}:", makefile, re.M) for t in ("repro", "test", "serve"))
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in ci and "make repro" in ci  # CI runs the README's two commands


def test_every_relative_link_and_image_in_the_manual_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text(encoding="utf-8")):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to a missing {target}"
        for path in re.findall(r"@(docs/[\w./-]+)", page.read_text(encoding="utf-8")):  # curl -F image=@...
            assert (ROOT / path).exists(), f"{page.relative_to(ROOT)} posts a missing {path}"


def test_the_example_answer_is_a_valid_report_for_the_committed_image():
    """docs/example-answer.json is what `make serve` answered for docs/bench.png (rendered scene 9): it
    validates, finds the scene's tools, and the README quotes its first tool as it is."""
    answer = json.loads((ROOT / "docs/example-answer.json").read_text())
    report = SafetyReport.model_validate(answer)
    image, truth = render_scene(9)
    from PIL import Image

    assert Image.open(ROOT / "docs/bench.png").size == image.size
    names = {t.name for t in report.tools}
    assert {t["name"] for t in truth} <= names
    first = report.tools[0]
    readme = README.read_text(encoding="utf-8")
    assert f'{{"name": "{first.name}", "bbox_2d": {json.dumps(first.bbox_2d)}' in readme
    assert json.dumps(first.primary_function) in readme


def test_the_figures_in_docs_are_what_the_results_files_give(tmp_path, monkeypatch):
    figures = _figures()
    assert figures.main(["--check"]) == 0, "docs/ differs from benchmarks/results/: run python benchmarks/docs_figures.py"
    pages = {p.name for p in figures.pages()}
    assert {"reliability.md", "gpu.md", "benchmarks.md"} <= pages
    # a changed result changes the page: the check is not vacuous
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks/results", results)
    soak = json.loads((results / "soak.json").read_text())
    soak["errors"] = 1234
    (results / "soak.json").write_text(json.dumps(soak))
    monkeypatch.setattr(figures, "RESULTS", results)
    page = (ROOT / "docs/reliability.md").read_text(encoding="utf-8")
    assert "1234 errors" in figures.render(page) and "1234 errors" not in page
