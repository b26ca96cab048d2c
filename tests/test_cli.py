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
