"""The dataset builder: validation, class mapping, safety fields, metrics, atomic output."""

import io
import json

import pytest
from PIL import Image

from safetyvlm.data.dataset import BuildReport, DatasetParams, build_dataset, build_rows, load_dataset_dir
from safetyvlm.data.records import InvalidInput, SourceExample
from safetyvlm.kb import load_kb
from safetyvlm.schema import CATEGORIES, SAFETY_FIELDS


def png(w=64, h=48, colour=(200, 100, 50)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format="PNG")
    return buf.getvalue()


def ex(name="a.png", split="train", image=None, instances=None, **kw) -> SourceExample:
    return SourceExample(
        image_name=name,
        split=split,
        image=png() if image is None else image,
        instances=[{"name": "Hammer", "bbox_2d": [1, 2, 30, 40]}] if instances is None else instances,
        where=kw.pop("where", f"src/{name}"),
        **kw,
    )


def params(**kw) -> DatasetParams:
    return DatasetParams.from_dict({"source": "yolo", "class_map": {"Spanners": "Wrench", "Files": None}, **kw})


def test_rows_carry_boxes_and_the_knowledge_base_safety_fields():
    report = BuildReport()
    rows = build_rows([ex()], params(), report)
    (row,) = rows["train"]
    (inst,) = row["instances"]
    assert inst["name"] == "Hammer" and inst["bbox_2d"] == [1, 2, 30, 40]
    assert {k: inst[k] for k in SAFETY_FIELDS} == load_kb().safety_fields("Hammer")
    assert (row["width"], row["height"]) == (64, 48)


def test_class_map_maps_ignores_and_source_safety_fields_win():
    own = {"primary_function": "own words", "required_ppe": ["x"], "primary_hazards": ["y"], "common_misuses": ["z"]}
    report = BuildReport()
    example = ex(
        instances=[{"name": "Spanners", "bbox_2d": [40, 2, 60, 40]}, {"name": "Files", "bbox_2d": [0, 0, 5, 5]}],
        safety={"Spanners": own},
    )
    (row,) = build_rows([example], params(), report)["train"]
    assert [i["name"] for i in row["instances"]] == ["Wrench"]
    assert row["instances"][0]["primary_function"] == "own words"
    assert report.ignored == {"Files": 1}


@pytest.mark.parametrize(
    "example,fragment",
    [
        (ex(name="bad.jpg", image=b"not an image at all"), "corrupt or unreadable image"),
        (ex(name="cut.png", image=png()[:60]), "corrupt or unreadable image"),
        (ex(name="gone.png", image=__import__("pathlib").Path("/nonexistent/gone.png")), "missing"),
        (ex(name="out.png", instances=[{"name": "Hammer", "bbox_2d": [10, 10, 90, 20]}]), "outside the 64x48 image"),
        (ex(name="flat.png", instances=[{"name": "Hammer", "bbox_2d": [10, 10, 10, 20]}]), "no area"),
        (ex(name="nan.png", instances=[{"name": "Hammer", "bbox_2d": [0, 0, float("nan"), 20]}]), "non-finite"),
        (ex(name="cls.png", instances=[{"name": "Laser level", "bbox_2d": [0, 0, 5, 5]}]), "unknown class 'Laser level'"),
        (ex(name="split.png", split="holdout"), "unknown split"),
    ],
)
def test_bad_input_stops_with_a_message_naming_the_row(example, fragment):
    with pytest.raises(InvalidInput) as err:
        build_rows([ex(name="fine.png"), example], params(), BuildReport())
    assert fragment in str(err.value)
    assert example.where in str(err.value)


def test_skip_invalid_skips_and_counts(tmp_path):
    examples = [
        ex(name="ok.png"),
        ex(name="bad.jpg", image=b"garbage"),
        ex(name="cls.png", instances=[{"name": "Laser level", "bbox_2d": [0, 0, 5, 5]}]),
        ex(name="ok2.png", split="test"),
    ]
    report = build_dataset(params(skip_invalid=True), tmp_path / "ds", tmp_path / "m.json", examples=examples)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["invalid"]["skipped"] == 2
    assert metrics["unmapped_classes"] == {"Laser level": 1}
    assert metrics["splits"]["train"]["images"] == 1 and metrics["splits"]["test"]["images"] == 1
    assert report.kept["valid"] == 0


def test_saved_dataset_has_three_splits_and_the_declared_features(tmp_path):
    examples = [ex(name=f"{s}.png", split=s) for s in ("train", "valid", "test")]
    build_dataset(params(), tmp_path / "ds", tmp_path / "m.json", tmp_path / "plot.json", examples=examples)
    dd = load_dataset_dir(tmp_path / "ds")
    assert set(dd) == {"train", "valid", "test"}
    row = dd["train"][0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (64, 48)
    assert row["instances"][0]["name"] == "Hammer"
    plot = json.loads((tmp_path / "plot.json").read_text())
    assert [r["class"] for r in plot] == list(CATEGORIES)
    assert next(r for r in plot if r["class"] == "Hammer")["total"] == 3


def test_large_photos_are_downscaled_with_their_boxes(tmp_path):
    big = ex(image=png(2000, 1000), instances=[{"name": "Hammer", "bbox_2d": [1000, 500, 2000, 1000]}])
    (row,) = build_rows([big], params(max_side=500), BuildReport())["train"]
    assert (row["width"], row["height"]) == (500, 250)
    assert row["instances"][0]["bbox_2d"] == [250, 125, 500, 250]


def test_a_failed_build_leaves_the_previous_dataset_untouched(tmp_path):
    out = tmp_path / "ds"
    build_dataset(params(), out, examples=[ex()])
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(InvalidInput):
        build_dataset(params(), out, examples=[ex(), ex(name="bad.jpg", image=b"garbage")])
    assert sorted(p.name for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp dirs left behind


def test_params_reject_unknown_keys_and_bad_class_map():
    with pytest.raises(ValueError, match="unknown keys"):
        DatasetParams.from_dict({"sorce": "synthetic"})
    with pytest.raises(ValueError, match="not categories"):
        DatasetParams.from_dict({"class_map": {"Spanners": "Spanner"}})
    with pytest.raises(ValueError, match="unknown splits"):
        DatasetParams.from_dict({"sizes": {"training": 3}})


def test_exif_rotated_photos_are_stored_upright():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (60, 30), (1, 2, 3)).save(buf, format="JPEG", exif=exif)
    upright = ex(image=buf.getvalue(), instances=[{"name": "Hammer", "bbox_2d": [0, 0, 30, 60]}])
    (row,) = build_rows([upright], params(), BuildReport())["train"]
    assert (row["width"], row["height"]) == (30, 60)
    assert Image.open(io.BytesIO(row["image"]["bytes"])).size == (30, 60)


def test_the_synthetic_source_adds_a_shifted_test_split_rendered_with_its_own_settings(tmp_path):
    p = DatasetParams.from_dict({
        "sizes": {"train": 2, "valid": 1, "test": 2},
        "render": {"clutter": 0, "backgrounds": ["wood"]},
        "shifted": {"size": 2, "render": {"backgrounds": ["mat"], "clutter": 6}},
    })
    build_dataset(p, tmp_path / "ds", tmp_path / "m.json")
    dd = load_dataset_dir(tmp_path / "ds")
    assert set(dd) == {"train", "valid", "test", "test_shifted"}
    assert len(dd["test_shifted"]) == 2
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["splits"]["test_shifted"]["images"] == 2
    # other pixels than the in-distribution test images of the same seed offsets
    assert dd["test_shifted"][0]["image"].tobytes() != dd["test"][0]["image"].tobytes()


def test_train_render_widens_the_train_split_alone(tmp_path):
    base = {"sizes": {"train": 2, "valid": 1, "test": 1}, "render": {"clutter": 0, "backgrounds": ["wood"]},
            "shifted": {}}
    build_dataset(DatasetParams.from_dict(base), tmp_path / "plain")
    build_dataset(DatasetParams.from_dict({**base, "train_render": {"lighting": 1.6, "clutter": 5}}), tmp_path / "wide")
    plain, wide = load_dataset_dir(tmp_path / "plain"), load_dataset_dir(tmp_path / "wide")
    pixels = lambda dd, split: [r["image"].tobytes() for r in dd[split]]  # noqa: E731
    assert pixels(wide, "train") != pixels(plain, "train")
    assert pixels(wide, "valid") == pixels(plain, "valid") and pixels(wide, "test") == pixels(plain, "test")
    with pytest.raises(ValueError, match="lighting"):
        build_dataset(DatasetParams.from_dict({**base, "train_render": {"lighting": -1}}), tmp_path / "bad")
