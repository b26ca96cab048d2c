"""Importers: each source format written for real into tmp_path, plus the real Roboflow YOLO fixture."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from safetyvlm.data.importers import IMPORTERS, import_parquet, iter_source
from safetyvlm.data.records import SPLITS, InvalidInput, SourceExample

FIXTURE = Path(__file__).parent / "fixtures" / "real-tools"


def _img(path: Path, size=(40, 20), fmt=None, exif_orientation=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, (120, 90, 60))
    kw = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kw["exif"] = exif
    im.save(path, format=fmt, **kw)
    return path


def _png_bytes(size=(30, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, format="PNG")
    return buf.getvalue()


def _check_boxes(ex: SourceExample, expected: list[tuple[str, list[float]]]) -> None:
    assert [i["name"] for i in ex.instances] == [name for name, _ in expected]
    for inst, (_, box) in zip(ex.instances, expected):
        assert inst["bbox_2d"] == pytest.approx(box)


def test_registry_and_unknown_source(tmp_path):
    assert set(IMPORTERS) == {"parquet", "coco", "yolo", "voc"}
    with pytest.raises(ValueError, match=r"unknown source 'labelme'.*coco.*parquet.*voc.*yolo"):
        iter_source("labelme", tmp_path)
    with pytest.raises(InvalidInput, match="does not exist"):
        list(iter_source("yolo", tmp_path / "nope"))


# ------------------------------------------------------------------------------------- parquet

_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_BOXES = pa.list_(pa.list_(pa.float64()))


def _tool_table(rows: list[dict]) -> pa.Table:
    """The tool-safety layout: HF Image struct, image_name, <Category>_bboxes + safety text."""
    cols = {
        "image": pa.array([r["image"] for r in rows], _IMAGE_TYPE),
        "image_name": pa.array([r["image_name"] for r in rows], pa.string()),
        # exact CATEGORIES spelling
        "Hammer_bboxes": pa.array([r.get("hammer") for r in rows], _BOXES),
        "Hammer_main_purpose": pa.array([r.get("hammer_purpose") for r in rows], pa.string()),
        "Hammer_usage_instructions": pa.array(["Grip the handle end."] * len(rows), pa.string()),
        "Hammer_required_ppe": pa.array([r.get("hammer_ppe") for r in rows], pa.string()),
        "Hammer_primary_hazards": pa.array([r.get("hammer_hazards") for r in rows], pa.string()),
        "Hammer_common_misuses": pa.array([r.get("hammer_misuses") for r in rows], pa.string()),
        "Hammer_cleaning": pa.array(["Wipe."] * len(rows), pa.string()),
        "Hammer_storage": pa.array(["Rack."] * len(rows), pa.string()),
        "Hammer_maintenance_frequency": pa.array(["Monthly"] * len(rows), pa.string()),
        # underscores for spaces
        "Adjustable_spanner_bboxes": pa.array([r.get("spanner") for r in rows], _BOXES),
        "Adjustable_spanner_main_purpose": pa.array([r.get("spanner_purpose") for r in rows], pa.string()),
        "Adjustable_spanner_required_ppe": pa.array([r.get("spanner_ppe") for r in rows], pa.string()),
        "Adjustable_spanner_primary_hazards": pa.array([None] * len(rows), pa.string()),
        "Adjustable_spanner_common_misuses": pa.array([None] * len(rows), pa.string()),
        # spaces and a hyphen kept, boxes as a JSON string
        "Needle-nose pliers_bboxes": pa.array([r.get("needle") for r in rows], pa.string()),
        "Needle-nose pliers_main_purpose": pa.array([None] * len(rows), pa.string()),
    }
    return pa.table(cols)


def _write_parquet(tmp_path: Path) -> Path:
    root = tmp_path / "tool-safety"
    (root / "data").mkdir(parents=True)
    train = [
        {
            "image": {"bytes": _png_bytes(), "path": "a.png"},
            "image_name": "a.png",
            "hammer": [[1, 2, 11, 12], [3.5, 4.5, 20.25, 9]],
            "hammer_purpose": "  Driving nails  ",
            "hammer_ppe": "Safety glasses; Gloves ;",
            "hammer_hazards": "Struck fingers;Flying chips; ",
            "hammer_misuses": "Using as a pry bar; Striking hardened steel",
            "spanner": None,
            "needle": "[[5, 6, 7, 8]]",
        },
        {
            "image": {"bytes": _png_bytes(), "path": "b.png"},
            "image_name": "b.png",
            "hammer": [],
            "spanner": [[0, 0, 30, 10]],
            "spanner_purpose": "Turning nuts",
            "spanner_ppe": "Gloves, Safety glasses",
            "needle": "",
        },
    ]
    pq.write_table(_tool_table(train), root / "data" / "train-00000-of-00001.parquet")
    valid = [{"image": {"bytes": _png_bytes(), "path": None}, "image_name": "c.png", "needle": None}]
    pq.write_table(_tool_table(valid), root / "data" / "validation-00000-of-00001.parquet")
    return root


def test_parquet_boxes_names_and_safety(tmp_path):
    root = _write_parquet(tmp_path)
    examples = list(iter_source("parquet", root))
    assert [(e.split, e.image_name) for e in examples] == [
        ("train", "a.png"),
        ("train", "b.png"),
        ("valid", "c.png"),
    ]
    a, b, c = examples
    assert isinstance(a.image, bytes) and Image.open(io.BytesIO(a.image)).size == (30, 10)
    assert a.instances == [
        {"name": "Hammer", "bbox_2d": [1.0, 2.0, 11.0, 12.0]},
        {"name": "Hammer", "bbox_2d": [3.5, 4.5, 20.25, 9.0]},
        {"name": "Needle-nose pliers", "bbox_2d": [5.0, 6.0, 7.0, 8.0]},
    ]
    assert a.safety == {
        "Hammer": {
            "primary_function": "Driving nails",
            "required_ppe": ["Safety glasses", "Gloves"],
            "primary_hazards": ["Struck fingers", "Flying chips"],
            "common_misuses": ["Using as a pry bar", "Striking hardened steel"],
        },
    }  # Needle-nose pliers has boxes but no safety text: left to the knowledge base
    # Adjustable_spanner_* columns are reported under the canonical category name; PPE split on ','
    assert b.instances == [{"name": "Adjustable spanner", "bbox_2d": [0.0, 0.0, 30.0, 10.0]}]
    assert b.safety == {
        "Adjustable spanner": {
            "primary_function": "Turning nuts",
            "required_ppe": ["Gloves", "Safety glasses"],
            "primary_hazards": [],
            "common_misuses": [],
        }
    }
    assert c.instances == [] and c.safety == {}
    assert a.where.endswith("train-00000-of-00001.parquet:row 0")
    assert b.where.endswith(":row 1")


def test_parquet_split_layouts_plain_bytes_and_batches(tmp_path):
    # folder per split (the HF parquet-converter layout), plain bytes image column, train.parquet name
    png = _png_bytes()
    t = pa.table(
        {
            "image": pa.array([png, png, png], pa.binary()),
            "image_name": ["x0.png", "x1.png", "x2.png"],
            "Drill_bboxes": pa.array([[[1, 1, 2, 2]], None, [[0, 0, 1, 1], [2, 2, 3, 3]]], _BOXES),
        }
    )
    pq.write_table(t, tmp_path / "train.parquet")
    (tmp_path / "default" / "test").mkdir(parents=True)
    pq.write_table(t.slice(0, 1), tmp_path / "default" / "test" / "0000.parquet")
    (tmp_path / "valid").mkdir()
    pq.write_table(t.slice(1, 1), tmp_path / "valid" / "0000.parquet")
    examples = list(import_parquet(tmp_path, batch_size=1))
    assert [(e.split, e.image_name, len(e.instances)) for e in examples] == [
        ("train", "x0.png", 1),
        ("train", "x1.png", 0),
        ("train", "x2.png", 2),
        ("valid", "x1.png", 0),
        ("test", "x0.png", 1),
    ]
    assert examples[0].image == png
    assert examples[2].instances[1] == {"name": "Drill", "bbox_2d": [2.0, 2.0, 3.0, 3.0]}
    assert examples[4].where.endswith("0000.parquet:row 0")


def test_parquet_image_by_path(tmp_path):
    _img(tmp_path / "imgs" / "p.png")
    t = pa.table(
        {
            "image": pa.array([{"bytes": None, "path": "imgs/p.png"}], _IMAGE_TYPE),
            "Hand_bboxes": pa.array([[[1, 2, 3, 4]]], _BOXES),
        }
    )
    pq.write_table(t, tmp_path / "test-00000-of-00001.parquet")
    (ex,) = iter_source("parquet", tmp_path)
    assert ex.image == tmp_path / "imgs" / "p.png"
    assert ex.image_name == "p.png" and ex.split == "test"


@pytest.mark.parametrize(
    "boxes, match",
    [
        ("[[1, 2, 3]]", r"row 1 column 'Hammer_bboxes'.*box 0 must be"),
        ("[[1, 2, 3, \"x\"]]", r"row 1 column 'Hammer_bboxes'.*not a number"),
        ("[[5, 2, 3, 4]]", r"row 1 column 'Hammer_bboxes'.*negative size"),
        ("[[1, 2", r"row 1 column 'Hammer_bboxes'.*not a JSON list"),
    ],
)
def test_parquet_bad_boxes_name_file_and_row(tmp_path, boxes, match):
    t = pa.table(
        {
            "image": pa.array([_png_bytes()] * 2, pa.binary()),
            "image_name": ["ok.png", "bad.png"],
            "Hammer_bboxes": pa.array(["[[1, 2, 3, 4]]", boxes], pa.string()),
        }
    )
    pq.write_table(t, tmp_path / "train.parquet")
    with pytest.raises(InvalidInput, match=r"train\.parquet:" + match):
        list(iter_source("parquet", tmp_path))


def test_parquet_unknown_split_and_missing_image(tmp_path):
    t = pa.table({"image": pa.array([_png_bytes()], pa.binary()), "Hammer_bboxes": pa.array([None], _BOXES)})
    pq.write_table(t, tmp_path / "tools.parquet")
    with pytest.raises(InvalidInput, match=r"tools\.parquet: cannot tell the split"):
        list(iter_source("parquet", tmp_path))

    other = tmp_path / "o"
    other.mkdir()
    t = pa.table({"image": pa.array([{"bytes": None, "path": "gone.png"}], _IMAGE_TYPE)})
    pq.write_table(t, other / "train.parquet")
    with pytest.raises(InvalidInput, match=r"train\.parquet:row 0: .*'gone\.png' is not a file"):
        list(iter_source("parquet", other))
    with pytest.raises(InvalidInput, match="no .parquet files"):
        list(iter_source("parquet", _empty(tmp_path)))


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


# ---------------------------------------------------------------------------------------- coco


def _coco(images, annotations, categories=None) -> str:
    categories = categories or [
        {"id": 0, "name": "tools", "supercategory": "none"},
        {"id": 1, "name": "hammer", "supercategory": "tools"},
        {"id": 2, "name": "wrench", "supercategory": "tools"},
    ]
    return json.dumps({"info": {}, "images": images, "annotations": annotations, "categories": categories})


def test_coco_roboflow_layout(tmp_path):
    for split in ("train", "valid"):
        _img(tmp_path / split / f"{split}1.jpg", (64, 48))
        _img(tmp_path / split / f"{split}2.jpg", (64, 48))
        images = [
            {"id": 0, "file_name": f"{split}1.jpg", "width": 64, "height": 48},
            {"id": 1, "file_name": f"{split}2.jpg", "width": 64, "height": 48},
        ]
        anns = [
            {"id": 0, "image_id": 0, "category_id": 1, "bbox": [10, 5, 20.5, 8], "area": 164, "iscrowd": 0},
            {"id": 1, "image_id": 0, "category_id": 2, "bbox": [0, 0, 64, 48], "area": 3072, "iscrowd": 0},
            {"id": 2, "image_id": 0, "category_id": 2, "bbox": [1, 1, 30, 30], "area": 900, "iscrowd": 1},
        ]
        (tmp_path / split / "_annotations.coco.json").write_text(_coco(images, anns))
    examples = list(iter_source("coco", tmp_path))
    assert [(e.split, e.image_name) for e in examples] == [
        ("train", "train1.jpg"),
        ("train", "train2.jpg"),
        ("valid", "valid1.jpg"),
        ("valid", "valid2.jpg"),
    ]
    first = examples[0]
    assert first.image == tmp_path / "train" / "train1.jpg"
    # xywh -> xyxy; the crowd annotation is skipped
    assert first.instances == [
        {"name": "hammer", "bbox_2d": [10.0, 5.0, 30.5, 13.0]},
        {"name": "wrench", "bbox_2d": [0.0, 0.0, 64.0, 48.0]},
    ]
    assert examples[1].instances == []  # an image without annotations
    assert first.safety == {}
    assert "_annotations.coco.json" in first.where


def test_coco_instances_layout(tmp_path):
    _img(tmp_path / "images" / "val2017" / "000001.jpg")
    _img(tmp_path / "images" / "test" / "sub" / "t.png")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(
        _coco(
            [{"id": 7, "file_name": "000001.jpg"}],
            [{"id": 3, "image_id": 7, "category_id": 2, "bbox": [1, 2, 3, 4]}],
        )
    )
    (tmp_path / "annotations" / "instances_test.json").write_text(
        _coco([{"id": 1, "file_name": "sub/t.png"}], [])
    )
    (tmp_path / "annotations" / "captions_val2017.json").write_text("{}")  # not detection: ignored
    examples = list(iter_source("coco", tmp_path))
    assert [(e.split, e.image_name) for e in examples] == [("valid", "000001.jpg"), ("test", "t.png")]
    assert examples[0].instances == [{"name": "wrench", "bbox_2d": [1.0, 2.0, 4.0, 6.0]}]
    assert examples[1].image == tmp_path / "images" / "test" / "sub" / "t.png"


def test_coco_errors_name_file_and_entry(tmp_path):
    _img(tmp_path / "train" / "a.jpg")
    path = tmp_path / "train" / "_annotations.coco.json"
    good = {"id": 0, "image_id": 0, "category_id": 1, "bbox": [0, 0, 1, 1]}

    path.write_text(_coco([{"id": 0, "file_name": "a.jpg"}], [good, {**good, "id": 9, "image_id": 5}]))
    msg = r"_annotations\.coco\.json:annotations\[1\] \(id 9\): refers to image id 5"
    with pytest.raises(InvalidInput, match=msg):
        list(iter_source("coco", tmp_path))

    path.write_text(_coco([{"id": 0, "file_name": "a.jpg"}], [{**good, "category_id": 42}]))
    with pytest.raises(InvalidInput, match=r"annotations\[0\].*category id 42"):
        list(iter_source("coco", tmp_path))

    path.write_text(_coco([{"id": 0, "file_name": "a.jpg"}], [{**good, "bbox": [0, 0, -1, 1]}]))
    with pytest.raises(InvalidInput, match=r"annotations\[0\].*negative"):
        list(iter_source("coco", tmp_path))

    path.write_text(_coco([{"id": 0, "file_name": "a.jpg"}, {"id": 1, "file_name": "missing.jpg"}], []))
    msg = r"_annotations\.coco\.json:images\[1\] \(id 1\): image file 'missing\.jpg' not found"
    with pytest.raises(InvalidInput, match=msg):
        list(iter_source("coco", tmp_path))

    path.write_text("{not json")
    with pytest.raises(InvalidInput, match=r"_annotations\.coco\.json: not a readable COCO JSON"):
        list(iter_source("coco", tmp_path))

    with pytest.raises(InvalidInput, match="no COCO annotations found"):
        list(iter_source("coco", _empty(tmp_path)))


# ---------------------------------------------------------------------------------------- yolo


def _yolo_root(tmp_path: Path, data: dict) -> Path:
    root = tmp_path / "ds"
    root.mkdir()
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


def test_yolo_boxes_segments_and_names_dict(tmp_path):
    root = _yolo_root(
        tmp_path,
        {"path": ".", "train": "images/train", "val": "images/val", "names": {0: "hammer", 1: "saw"}},
    )
    _img(root / "images" / "train" / "a.png", (200, 100))
    _img(root / "images" / "train" / "b.jpg", (50, 50))  # no label file: no instances
    _img(root / "images" / "val" / "c.png", (10, 20))
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n\n1 0.1 0.2 0.3 0.2 0.25 0.6 0.05 0.5\n"
    )
    (root / "labels" / "val" / "c.txt").write_text("")
    examples = list(iter_source("yolo", root))
    assert [(e.split, e.image_name) for e in examples] == [
        ("train", "a.png"),
        ("train", "b.jpg"),
        ("valid", "c.png"),
    ]
    a = examples[0]
    assert a.image == root / "images" / "train" / "a.png"
    _check_boxes(a, [("hammer", [80.0, 30.0, 120.0, 70.0]), ("saw", [10.0, 20.0, 60.0, 60.0])])
    assert examples[1].instances == [] and examples[2].instances == []
    assert a.where.endswith("labels/train/a.txt")


def test_yolo_roboflow_paths_and_exif(tmp_path):
    # Roboflow: '../train/images' relative to data.yaml points outside the folder; names as a list.
    root = _yolo_root(
        tmp_path,
        {
            "train": "../train/images",
            "val": "../valid/images",
            "test": "../test/images",
            "nc": 2,
            "names": ["a", "b"],
        },
    )
    # EXIF orientation 6: stored 60x30, shown (and labelled by Ultralytics) as 30x60
    _img(root / "valid" / "images" / "r.jpg", (60, 30), exif_orientation=6)
    (root / "valid" / "labels").mkdir()
    (root / "valid" / "labels" / "r.txt").write_text("1 0.5 0.5 1 1")
    _img(root / "test" / "images" / "t.jpg", (60, 30))
    (ex_v, ex_t) = list(iter_source("yolo", root))  # train is absent: it yields nothing
    assert (ex_v.split, ex_t.split) == ("valid", "test")
    assert ex_v.instances == [{"name": "b", "bbox_2d": pytest.approx([0.0, 0.0, 30.0, 60.0])}]
    assert ex_t.instances == []


def test_yolo_txt_image_list(tmp_path):
    root = _yolo_root(tmp_path, {"train": "train.txt", "names": ["x"]})
    _img(root / "images" / "p.png", (10, 10))
    (root / "labels").mkdir()
    (root / "labels" / "p.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "train.txt").write_text("./images/p.png\n")
    (ex,) = iter_source("yolo", root)
    assert ex.instances == [{"name": "x", "bbox_2d": pytest.approx([2.5, 2.5, 7.5, 7.5])}]
    (root / "train.txt").write_text("./images/p.png\n./images/gone.png\n")
    with pytest.raises(InvalidInput, match=r"train\.txt:2: listed image './images/gone\.png' not found"):
        list(iter_source("yolo", root))


@pytest.mark.parametrize(
    "line, match",
    [
        ("0 0.5 0.5 0.2", r"a\.txt:2: expected 'class cx cy w h'.*got 4 fields"),
        ("3 0.5 0.5 0.2 0.2", r"a\.txt:2: class id 3 out of range 0\.\.1"),
        ("-1 0.5 0.5 0.2 0.2", r"a\.txt:2: class id -1 out of range"),
        ("0 0.5 abc 0.2 0.2", r"a\.txt:2: coordinate is not a number"),
        ("0 0.5 nan 0.2 0.2", r"a\.txt:2: coordinate is not finite"),
        ("0 0.5 0.5 0.2 0.2 0.9", r"a\.txt:2: expected .*got 6 fields"),
    ],
)
def test_yolo_bad_label_lines(tmp_path, line, match):
    root = _yolo_root(tmp_path, {"train": "train/images", "names": ["x", "y"]})
    _img(root / "train" / "images" / "a.png")
    (root / "train" / "labels").mkdir(parents=True)
    (root / "train" / "labels" / "a.txt").write_text(f"1 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(InvalidInput, match=match):
        list(iter_source("yolo", root))


def test_yolo_bad_layouts(tmp_path):
    root = _yolo_root(tmp_path, {"train": "nowhere/images", "names": ["x"]})
    with pytest.raises(InvalidInput, match=r"data\.yaml: none of the split paths"):
        list(iter_source("yolo", root))
    (root / "data.yaml").write_text("train: train/images\nnc: 3\nnames: [a, b]\n")
    with pytest.raises(InvalidInput, match=r"data\.yaml: nc is 3"):
        list(iter_source("yolo", root))
    with pytest.raises(InvalidInput, match="no data.yaml"):
        list(iter_source("yolo", _empty(tmp_path)))


def test_yolo_unreadable_image(tmp_path):
    root = _yolo_root(tmp_path, {"train": "train/images", "names": ["x"]})
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "images" / "a.jpg").write_bytes(b"not a jpeg")
    (root / "train" / "labels").mkdir()
    (root / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(InvalidInput, match=r"a\.jpg: not a readable image"):
        list(iter_source("yolo", root))


def test_yolo_real_roboflow_fixture():
    names = yaml.safe_load((FIXTURE / "data.yaml").read_text())["names"]
    examples = list(iter_source("yolo", FIXTURE))
    assert len(examples) == 18
    assert sum(len(e.instances) for e in examples) == 19
    assert {e.split for e in examples} == {"valid", "test"}  # train folder absent: nothing, no error
    assert sum(e.split == "valid" for e in examples) == 10
    for ex in examples:
        assert isinstance(ex.image, Path) and ex.image.is_file()
        assert ex.image_name == ex.image.name
        with Image.open(ex.image) as im:
            w, h = im.size
        assert (w, h) in ((4080, 1836), (1836, 4080))
        for inst in ex.instances:
            assert inst["name"] in names
            x1, y1, x2, y2 = inst["bbox_2d"]
            assert 0 <= x1 < x2 <= w + 1e-6 and 0 <= y1 < y2 <= h + 1e-6
    (two,) = [e for e in examples if e.image_name.startswith("IMG_20220214_172709")]
    assert two.split == "test"
    assert [i["name"] for i in two.instances] == ["Screwdriver", "Scissors"]
    # the first label line: 5 0.5109... 0.5435... 0.7664... 0.3921...
    assert two.instances[0]["bbox_2d"] == pytest.approx([523.59, 710.0, 3650.75, 1430.0], abs=0.01)


# ----------------------------------------------------------------------------------------- voc


def _voc_xml(filename: str, objects: list[tuple[str, tuple]], size=(40, 20)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    return (
        f"<annotation><folder>JPEGImages</folder><filename>{filename}</filename>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{objs}</annotation>"
    )


def test_voc_devkit_layout(tmp_path):
    for name in ("000001", "000002", "000003"):
        _img(tmp_path / "JPEGImages" / f"{name}.jpg")
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "000001.xml").write_text(
        _voc_xml("000001.jpg", [("hammer", (1, 1, 10, 20)), ("saw", (5.5, 3, 40, 12))])
    )
    (tmp_path / "Annotations" / "000002.xml").write_text(_voc_xml("000002.jpg", []))
    # filename in the XML does not match: the image is found by the id
    (tmp_path / "Annotations" / "000003.xml").write_text(_voc_xml("renamed.png", [("drill", (0, 2, 4, 6))]))
    sets = tmp_path / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("000001\n000002\n")
    (sets / "val.txt").write_text("000003\n")
    (sets / "hammer_train.txt").write_text("000001  1\n")  # class-specific lists are ignored
    examples = list(iter_source("voc", tmp_path))
    assert [(e.split, e.image_name) for e in examples] == [
        ("train", "000001.jpg"),
        ("train", "000002.jpg"),
        ("valid", "000003.jpg"),
    ]
    # 1-based inclusive -> [xmin - 1, ymin - 1, xmax, ymax]; xmin = 0 (0-based writer) clamps at 0
    assert examples[0].instances == [
        {"name": "hammer", "bbox_2d": [0.0, 0.0, 10.0, 20.0]},
        {"name": "saw", "bbox_2d": [4.5, 2.0, 40.0, 12.0]},
    ]
    assert examples[1].instances == []
    assert examples[2].instances == [{"name": "drill", "bbox_2d": [0.0, 1.0, 4.0, 6.0]}]
    assert examples[0].image == tmp_path / "JPEGImages" / "000001.jpg"
    assert examples[0].where.endswith("Annotations/000001.xml")


def test_voc_split_folders(tmp_path):
    _img(tmp_path / "train" / "a.jpg")
    (tmp_path / "train" / "a.xml").write_text(_voc_xml("a.jpg", [("Pliers", (11, 21, 30, 40))]))
    _img(tmp_path / "train" / "bare.png")  # an image without XML: no instances
    _img(tmp_path / "valid" / "v.jpg")
    (tmp_path / "valid" / "v.xml").write_text(_voc_xml("v.jpg", []))
    _img(tmp_path / "test" / "t.jpg")
    (tmp_path / "test" / "t.xml").write_text(_voc_xml("t.jpg", [("Hand", (2, 2, 3, 3))]))
    examples = list(iter_source("voc", tmp_path))
    assert [(e.split, e.image_name, e.instances) for e in examples] == [
        ("train", "a.jpg", [{"name": "Pliers", "bbox_2d": [10.0, 20.0, 30.0, 40.0]}]),
        ("train", "bare.png", []),
        ("valid", "v.jpg", []),
        ("test", "t.jpg", [{"name": "Hand", "bbox_2d": [1.0, 1.0, 3.0, 3.0]}]),
    ]


def test_voc_errors(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    (d / "a.xml").write_text(_voc_xml("a.jpg", []))
    with pytest.raises(InvalidInput, match=r"a\.xml: image 'a\.jpg' not found"):
        list(iter_source("voc", tmp_path))
    _img(d / "a.jpg")
    (d / "a.xml").write_text(_voc_xml("a.jpg", [("x", (1, 1, 2, 2)), ("y", (1, "one", 2, 2))]))
    with pytest.raises(InvalidInput, match=r"a\.xml:object 1: <ymin> is not a number"):
        list(iter_source("voc", tmp_path))
    (d / "a.xml").write_text("<annotation><object><name>x</name>")
    with pytest.raises(InvalidInput, match=r"a\.xml: not a readable XML"):
        list(iter_source("voc", tmp_path))
    with pytest.raises(InvalidInput, match="unknown VOC layout"):
        list(iter_source("voc", _empty(tmp_path)))

    kit = tmp_path / "kit"
    (kit / "Annotations").mkdir(parents=True)
    (kit / "ImageSets" / "Main").mkdir(parents=True)
    (kit / "ImageSets" / "Main" / "test.txt").write_text("\n42\n")
    with pytest.raises(InvalidInput, match=r"test\.txt:2: annotation .*42\.xml not found"):
        list(iter_source("voc", kit))


def test_boxes_are_plain_floats(tmp_path):
    _img(tmp_path / "voc" / "train" / "a.jpg")
    (tmp_path / "voc" / "train" / "a.xml").write_text(_voc_xml("a.jpg", [("x", (1, 1, 2, 2))]))
    examples = [*iter_source("voc", tmp_path / "voc"), *iter_source("yolo", FIXTURE)]
    for ex in examples:
        assert ex.split in SPLITS
        for inst in ex.instances:
            assert set(inst) == {"name", "bbox_2d"}
            assert len(inst["bbox_2d"]) == 4 and all(type(v) is float for v in inst["bbox_2d"])
