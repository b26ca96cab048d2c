"""Build the on-disk dataset from any source: validate, map classes, attach safety fields, save.

Every source (the renderer or an importer) yields `SourceExample`s; this module is the only place that
decides what a valid row is, so the checks and the error messages are the same for all of them.
"""

from __future__ import annotations

import io
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image, ImageOps, UnidentifiedImageError

from safetyvlm.config import from_section
from safetyvlm.data.importers import iter_source
from safetyvlm.data.records import SPLITS, InvalidInput, SourceExample
from safetyvlm.data.render import RenderConfig, render_examples
from safetyvlm.io import atomic_output_dir, atomic_write_json
from safetyvlm.kb import load_kb
from safetyvlm.schema import CATEGORIES, SAFETY_FIELDS

# A test split rendered with settings the training split never shows (other backgrounds, lighting, scales,
# clutter: `dataset.shifted`), so results say how far the model generalises beyond its render settings.
SHIFTED = "test_shifted"
BOX_TOLERANCE_PX = 1.0  # annotation tools round to whole pixels; beyond this a box is "outside"
JPEG_QUALITY = 95
ORIENTATION_TAG = 0x0112


def training_render() -> dict:
    """The render settings of the training scenes (RenderConfig fields over its defaults): a third of the
    tools recoloured, so the class comes from the shape, on five of the seven surfaces; diamond plate and
    rubber mat are kept for the shifted test set. The bases' pretraining renders the same way."""
    return {"recolor": 0.3, "backgrounds": ["wood", "metal", "pegboard", "concrete", "plywood"]}


def shifted_test_set() -> dict:
    """`dataset.shifted`: 200 test scenes on the held-out surfaces, harder light, other sizes, more clutter."""
    return {"size": 200, "render": {"backgrounds": ["diamond", "mat"], "lighting": 1.8,
                                    "scale_range": [0.25, 0.9], "clutter": 8}}


@dataclass
class DatasetParams:
    """The `dataset:` section of params.yaml."""

    source: str = "synthetic"  # synthetic | parquet | coco | yolo | voc
    path: str | None = None  # root of a foreign source
    seed: int = 0
    sizes: dict = field(default_factory=lambda: {"train": 2000, "valid": 200, "test": 200})
    render: dict = field(default_factory=training_render)  # RenderConfig fields
    # RenderConfig fields over `render` for the train split alone (valid and test keep `render`): wider
    # light, sizes and clutter in training, so the finetune does not narrow what the base has seen
    train_render: dict = field(default_factory=dict)
    class_map: dict = field(default_factory=dict)  # foreign name -> category, or null to ignore
    skip_invalid: bool = False
    max_side: int | None = 1024  # foreign photos are downscaled to this longest side
    # {size: N, render: {...}}: the synthetic source also renders N `test_shifted` images, with these
    # RenderConfig fields over `render`; {} for none
    shifted: dict = field(default_factory=shifted_test_set)

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetParams":
        params = from_section(cls, d, "dataset params")
        bad_targets = {k: v for k, v in params.class_map.items() if v is not None and v not in CATEGORIES}
        if bad_targets:
            raise ValueError(f"dataset.class_map maps onto names that are not categories: {bad_targets}")
        unknown_splits = sorted(set(params.sizes) - set(SPLITS))
        if unknown_splits:
            raise ValueError(f"dataset.sizes: unknown splits {unknown_splits}; use {list(SPLITS)}")
        return params


@dataclass
class BuildReport:
    """What happened to every source row; becomes metrics/dataset.json."""

    kept: Counter = field(default_factory=Counter)  # split -> images
    boxes: Counter = field(default_factory=Counter)  # split -> boxes
    per_class: dict = field(default_factory=lambda: defaultdict(Counter))  # split -> class -> boxes
    max_boxes: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    skipped_rows: list = field(default_factory=list)
    unmapped: Counter = field(default_factory=Counter)  # foreign class -> boxes
    ignored: Counter = field(default_factory=Counter)  # class mapped to null -> boxes

    def splits(self) -> list[str]:
        return [*SPLITS, SHIFTED] if self.kept[SHIFTED] else list(SPLITS)

    def metrics(self) -> dict:
        splits = {}
        for split in self.splits():
            n = self.kept[split]
            splits[split] = {
                "images": n,
                "boxes": self.boxes[split],
                "boxes_per_image": round(self.boxes[split] / n, 3) if n else 0.0,
                "max_boxes_per_image": self.max_boxes[split],
                "per_class": {c: self.per_class[split][c] for c in CATEGORIES},
            }
        return {
            "splits": splits,
            "total": {"images": sum(self.kept.values()), "boxes": sum(self.boxes.values())},
            "invalid": {"skipped": sum(self.skipped.values()), "by_reason": dict(self.skipped)},
            "unmapped_classes": dict(self.unmapped),
            "ignored_classes": dict(self.ignored),
        }

    def class_distribution(self) -> list[dict]:
        rows = []
        for c in CATEGORIES:
            row = {"class": c, **{s: self.per_class[s][c] for s in self.splits()}}
            row["total"] = sum(row[s] for s in self.splits())
            rows.append(row)
        return rows


def _open_image(image: Image.Image | Path | bytes, where: str) -> tuple[Image.Image, bytes | None]:
    """Decode fully (so a truncated file fails here, not in training). Returns (RGB image, raw bytes)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB"), None
    try:
        raw = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
    except FileNotFoundError:
        raise InvalidInput(where, f"image file is missing: {image}") from None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            # Annotators (and the YOLO importer) label the upright image, so apply EXIF rotation;
            # the stored bytes are then re-encoded from the rotated pixels.
            if im.getexif().get(ORIENTATION_TAG, 1) != 1:
                im, raw = ImageOps.exif_transpose(im), None
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InvalidInput(where, f"corrupt or unreadable image: {type(e).__name__}: {e}") from None
    return rgb, raw


def _check_box(box: object, size: tuple[int, int], where: str) -> list[float]:
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise InvalidInput(where, f"box is not [x1, y1, x2, y2]: {box!r}")
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InvalidInput(where, f"box has a non-numeric value: {box!r}") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise InvalidInput(where, f"box has a non-finite value: {box!r}")
    if x2 <= x1 or y2 <= y1:
        raise InvalidInput(where, f"box has no area or reversed corners: {box!r}")
    w, h = size
    t = BOX_TOLERANCE_PX
    if x1 < -t or y1 < -t or x2 > w + t or y2 > h + t:
        raise InvalidInput(where, f"box {box!r} lies outside the {w}x{h} image")
    return [max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)]


class RowBuilder:
    """Turns one SourceExample into one dataset row, or raises InvalidInput naming it."""

    def __init__(self, params: DatasetParams):
        self.params = params
        self.kb = load_kb()

    def category(self, raw_name: str, where: str) -> str | None:
        if raw_name in CATEGORIES:
            return raw_name
        if raw_name in self.params.class_map:
            return self.params.class_map[raw_name]  # None: deliberately ignored
        raise InvalidInput(
            where,
            f"unknown class {raw_name!r}: add it to dataset.class_map (a category, or null to ignore it)",
        )

    def build(self, ex: SourceExample, report: BuildReport) -> dict:
        where = ex.where or ex.image_name
        if ex.split not in (*SPLITS, SHIFTED):
            raise InvalidInput(where, f"unknown split {ex.split!r}")
        image, raw = _open_image(ex.image, where)
        size = image.size
        instances = []
        ignored = Counter()
        for k, inst in enumerate(ex.instances):
            name = self.category(inst.get("name"), f"{where} box {k}")
            box = _check_box(inst.get("bbox_2d"), size, f"{where} box {k}")
            if name is None:
                ignored[inst.get("name")] += 1
                continue
            safety = ex.safety.get(inst["name"]) or ex.safety.get(name) or self.kb.safety_fields(name)
            instances.append({"name": name, "bbox_2d": box, **{f: safety[f] for f in SAFETY_FIELDS}})
        image, scale = self._downscale(image)
        if scale != 1.0:
            for inst in instances:
                inst["bbox_2d"] = [v * scale for v in inst["bbox_2d"]]
            raw = None
        report.ignored.update(ignored)
        instances.sort(key=lambda i: (i["bbox_2d"][0], i["bbox_2d"][1]))
        return {
            "image": {"bytes": raw if raw is not None else _jpeg(image), "path": ex.image_name},
            "image_name": ex.image_name,
            "width": image.width,
            "height": image.height,
            "source": self.params.source,
            "instances": instances,
        }

    def _downscale(self, image: Image.Image) -> tuple[Image.Image, float]:
        side = self.params.max_side
        if not side or max(image.size) <= side:
            return image, 1.0
        scale = side / max(image.size)
        new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(new, Image.Resampling.LANCZOS), new[0] / image.width


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def iter_examples(params: DatasetParams) -> Iterator[SourceExample]:
    if params.source == "synthetic":
        cfg = RenderConfig.from_dict(params.render)
        train_cfg = RenderConfig.from_dict({**params.render, **params.train_render})
        for offset, split in enumerate(SPLITS):
            # Splits get disjoint seeds so no test image is a re-render of a training one.
            yield from render_examples(params.sizes.get(split, 0), params.seed * 1000 + offset,
                                       train_cfg if split == "train" else cfg, split=split)
        if params.shifted.get("size"):
            shifted = RenderConfig.from_dict({**params.render, **params.shifted.get("render", {})})
            yield from render_examples(params.shifted["size"], params.seed * 1000 + len(SPLITS), shifted, split=SHIFTED)
        return
    if not params.path:
        raise ValueError(f"dataset.source={params.source!r} needs dataset.path (the folder to import)")
    root = Path(params.path)
    if not root.exists():
        raise InvalidInput(str(root), "dataset.path does not exist")
    yield from iter_source(params.source, root)


def features():
    from datasets import Features, Image as HFImage, List, Value

    instance = {
        "name": Value("string"),
        "bbox_2d": List(Value("float32"), length=4),
        "primary_function": Value("string"),
        "required_ppe": List(Value("string")),
        "primary_hazards": List(Value("string")),
        "common_misuses": List(Value("string")),
    }
    return Features(
        {
            "image": HFImage(),
            "image_name": Value("string"),
            "width": Value("int32"),
            "height": Value("int32"),
            "source": Value("string"),
            "instances": List(instance),
        }
    )


def build_rows(
    examples: Iterable[SourceExample], params: DatasetParams, report: BuildReport, progress=None
) -> dict[str, list[dict]]:
    builder = RowBuilder(params)
    rows: dict[str, list[dict]] = {s: [] for s in (*SPLITS, SHIFTED)}
    for ex in examples:
        try:
            row = builder.build(ex, report)
        except InvalidInput as err:
            if not params.skip_invalid:
                raise
            reason = err.reason.split(":")[0]
            report.skipped[reason] += 1
            if len(report.skipped_rows) < 50:
                report.skipped_rows.append(str(err))
            if "unknown class" in err.reason:
                report.unmapped[err.reason.split("'")[1]] += 1
            continue
        finally:
            if progress is not None:
                progress()
        rows[ex.split].append(row)
        n = len(row["instances"])
        report.kept[ex.split] += 1
        report.boxes[ex.split] += n
        report.max_boxes[ex.split] = max(report.max_boxes[ex.split], n)
        for inst in row["instances"]:
            report.per_class[ex.split][inst["name"]] += 1
    return rows


def build_dataset(
    params: DatasetParams,
    out_dir: str | Path,
    metrics_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    examples: Iterable[SourceExample] | None = None,
) -> BuildReport:
    """Build and save a DatasetDict (train/valid/test) atomically; write metrics and the class plot.

    `examples` defaults to what `params` selects (the renderer or an importer)."""
    from datasets import Dataset, DatasetDict
    from tqdm import tqdm

    report = BuildReport()
    total = sum(params.sizes.values()) + params.shifted.get("size", 0) if params.source == "synthetic" else None
    with tqdm(total=total, desc=f"dataset ({params.source})", unit="img", mininterval=2) as bar:
        rows = build_rows(examples if examples is not None else iter_examples(params), params, report, bar.update)
    feats = features()
    # from_list([]) loses the schema, so an empty split is built from empty columns instead.
    dd = DatasetDict(
        {
            s: Dataset.from_list(rows[s], features=feats) if rows[s] else Dataset.from_dict({k: [] for k in feats}, features=feats)
            for s in report.splits()
        }
    )
    with atomic_output_dir(out_dir) as tmp:
        dd.save_to_disk(str(tmp))
    if metrics_path:
        metrics = report.metrics()
        if report.skipped_rows:
            metrics["invalid"]["examples"] = report.skipped_rows[:10]
        atomic_write_json(metrics_path, metrics)
    if plot_path:
        atomic_write_json(plot_path, report.class_distribution())
    return report


def load_dataset_dir(path: str | Path):
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").exists():
        raise FileNotFoundError(f"{path} is not a built dataset; run `dvc repro dataset` first")
    return load_from_disk(str(path))
