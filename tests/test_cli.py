"""The `safetyvlm` command line, run through click's runner on a small built dataset."""

import io
import json

import pytest
from click.testing import CliRunner
from PIL import Image

from safetyvlm.cli import main
from safetyvlm.data.dataset import DatasetParams, build_dataset
from safetyvlm.data.records import SourceExample


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ds"
    examples = []
    for i, split in enumerate(["train", "train", "valid", "test"]):
        buf = io.BytesIO()
        Image.new("RGB", (80, 60), (40 * i, 90, 120)).save(buf, format="PNG")
        boxes = [{"name": "Drill", "bbox_2d": [5, 5, 40, 30]}, {"name": "Hand", "bbox_2d": [45, 10, 75, 55]}]
        examples.append(SourceExample(f"img{i}.png", split, buf.getvalue(), boxes[: 1 + i % 2]))
    build_dataset(DatasetParams(source="coco"), out, examples=examples)
    return out


def test_schema_prints_the_json_schema():
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "SafetyReport"


def test_parse_reads_stdin_and_exits_nonzero_when_invalid():
    runner = CliRunner()
    ok = runner.invoke(main, ["parse"], input='{"tools": []}')
    assert ok.exit_code == 0 and json.loads(ok.output) == {"tools": []}
    bad = runner.invoke(main, ["parse"], input="no json here")
    assert bad.exit_code == 1 and "no JSON" in bad.output


def test_dataset_show_counts_classes_per_split(dataset_dir):
    result = CliRunner().invoke(main, ["dataset", "show", "--path", str(dataset_dir)], terminal_width=200)
    assert result.exit_code == 0, result.output
    drill = next(line for line in result.output.splitlines() if "Drill" in line)
    assert [int(tok) for tok in drill.replace("│", " ").split() if tok.isdigit()] == [2, 1, 1]


def test_render_sample_writes_a_grid(dataset_dir, tmp_path):
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        main, ["dataset", "render-sample", "--path", str(dataset_dir), "-n", "2", "--columns", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    grid = Image.open(out)
    assert grid.size == (512, 256)
    # boxes are drawn: the grid holds the Drill's class colour, which the plain images do not
    from safetyvlm.data.preview import class_colour

    assert class_colour("Drill") in {c for _, c in grid.getcolors(1 << 20)}


def test_missing_dataset_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["dataset", "show", "--path", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "dvc repro dataset" in result.output


# --- predict: the answer /analyze gives, from the command line (issue 19, item 7) ---

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
TINY = ROOT / "models" / "shipped" / "qwen2_5_vl-tiny"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from safetyvlm.data.render import RenderConfig, render_scene

    image, _ = render_scene(3, RenderConfig(recolor=0.3))
    path = tmp_path_factory.mktemp("predict") / "scene.png"
    image.save(path)
    return path


@pytest.fixture(scope="module")
def rag_index(tmp_path_factory):
    from safetyvlm.rag.config import RagConfig
    from safetyvlm.rag.index import build_index

    out = tmp_path_factory.mktemp("predict-rag") / "rag"
    build_index(RagConfig(), out)
    return out


def predict(*args):
    result = CliRunner().invoke(main, ["predict", *map(str, args)])
    return result, [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_predict_grounds_the_safety_fields_as_the_service_does(scene):
    from safetyvlm.kb import load_kb

    kb = load_kb()
    result, [grounded] = predict(scene, "--model", TINY, "--no-retrieval")  # serve.ground: on by default
    assert result.exit_code == 0, result.output
    assert grounded["grounded"] is True and grounded["retrieval"] is False and grounded["report"]["tools"]
    for tool in grounded["report"]["tools"]:
        fields = kb.safety_fields(tool["name"])
        assert {k: tool[k] for k in fields} == fields
        assert tool["sources"] == [p.id for p in kb.passages_for(tool["name"])]
    result, [own] = predict(scene, "--model", TINY, "--no-retrieval", "--no-ground")
    assert result.exit_code == 0 and own["grounded"] is False
    # the same tools and boxes; the safety text is now the model's own words, not the KB's
    assert [(t["name"], t["bbox_2d"]) for t in own["report"]["tools"]] == \
        [(t["name"], t["bbox_2d"]) for t in grounded["report"]["tools"]]
    assert any(t["required_ppe"] != kb.safety_fields(t["name"])["required_ppe"] for t in own["report"]["tools"])


def test_predict_with_retrieval_reads_passages_from_the_index(scene, rag_index):
    result, [line] = predict(scene, "--model", TINY, "--retrieval", "--rag", rag_index, "--max-new-tokens", "64")
    assert result.exit_code == 0, result.output
    assert line["retrieval"] is True and line["passages"]
    missing = predict(scene, "--model", TINY, "--retrieval", "--rag", rag_index.parent / "nowhere")[0]
    assert missing.exit_code != 0 and "dvc repro rag-index" in missing.output


def test_predict_checks_its_images_before_loading_a_model(tmp_path, scene):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    # the model does not exist either: the image is named first, before any loading
    result, _ = predict(scene, bad, "--model", tmp_path / "no-model")
    assert result.exit_code != 0 and "notes.png: not a readable image" in result.output


def test_predict_defaults_to_the_final_model_and_says_how_to_get_it(tmp_path, scene, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)  # no models/final here
    result = CliRunner().invoke(main, ["predict", str(scene)])
    assert result.exit_code != 0
    assert "models/final/qwen2_5_vl/merged" in result.output and "dvc repro" in result.output


def test_an_uncached_hub_id_suggests_the_hf_download_command(scene, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result, _ = predict(scene, "--model", "someorg/not-a-cached-model")
    assert result.exit_code != 0 and "hf download someorg/not-a-cached-model" in result.output


def test_a_missing_or_broken_params_file_is_a_clear_error(tmp_path, scene, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = CliRunner().invoke(main, ["predict", str(scene), "--model", str(TINY)])
    assert missing.exit_code != 0 and "params.yaml not found" in missing.output
    (tmp_path / "params.yaml").write_text("serve: [unclosed\n")
    broken = CliRunner().invoke(main, ["predict", str(scene), "--model", str(TINY)])
    assert broken.exit_code != 0 and "cannot be read as YAML" in broken.output
    (tmp_path / "other.yaml").write_text("something: else\n")
    other = CliRunner().invoke(main, ["--params", "other.yaml", "predict", str(scene), "--model", str(TINY)])
    assert other.exit_code != 0 and "no `serve:` section" in other.output
