"""Importers: turn foreign dataset layouts into `SourceExample`s.

Every importer is `fn(root: Path) -> Iterator[SourceExample]`, registered in `IMPORTERS` under its
source name; `iter_source(source, root)` dispatches. Conventions shared by all of them:

* Splits come out as `train`, `valid`, `test` (a source's `val`/`validation` becomes `valid`), in
  that order; within a split, files come in sorted order (COCO: the JSON's `images` order; parquet:
  row order).
* `image` is a `Path` to the file, or the raw encoded `bytes` (parquet). Images are never decoded;
  only YOLO needs the pixel size, read from the file header.
* `instances` are `{"name": <the source's own class name>, "bbox_2d": [x1, y1, x2, y2]}` with float
  pixel coordinates of that image. Names are *not* mapped onto the 17 categories here, and boxes are
  not checked against the image bounds: the dataset builder does both.
* `image_name` is the image's file name (no folders); parquet uses its `image_name` column.
* `where` names the file (and line/row) the example came from, for later error messages.
* A structurally broken input (missing file, malformed line or XML/JSON, non-numeric or non-finite
  numbers, a box with negative size, a class id out of range, a layout whose splits can't be told)
  raises `InvalidInput(where, reason)`; `where` names the file and, where it applies, the line/row.

Format-specific conventions:

* parquet: the public tool-safety dataset's layout (Hugging Face style, one row per image).
  `<Category>_bboxes` hold pixel xyxy boxes. Column prefixes are matched to `CATEGORIES` ignoring
  case and treating space/underscore/hyphen alike (`Adjustable_spanner_bboxes`,
  `Needle_nose_pliers_bboxes`); a matched prefix is reported under its canonical spelling, an
  unmatched prefix with a `_bboxes` column under its own spelling. `safety[name]` is filled for
  every class of the row with any non-empty safety text (main purpose, PPE, hazards, misuses); a
  class without any is left out, so the builder can fall back to its knowledge base.
* coco: bbox `[x, y, w, h]` -> `[x, y, x + w, y + h]`. Crowd annotations (`iscrowd: 1`) are skipped:
  they mark a region holding many objects, not one object. Images without annotations yield empty
  `instances`.
* yolo: `class cx cy w h` (normalised) -> pixel xyxy using the image size from its header, taking
  EXIF orientation 5-8 into account (Ultralytics normalises against the upright image). Segment
  lines (`class x1 y1 x2 y2 x3 y3 ...`) become the bounding box of the polygon; for pose datasets
  (`kpt_shape` in data.yaml) the first four numbers are the box and the keypoints are ignored. A
  split path from data.yaml that does not exist is looked up as Ultralytics does (`../x` -> `x`
  under the dataset dir) and then as `<root>/<split>/images`; if none exists that split yields
  nothing (a Roboflow export without a train folder is fine), but no split at all is an error.
* voc: VOC pixel indices are 1-based and inclusive, so `bndbox` becomes
  `[xmin - 1, ymin - 1, xmax, ymax]` (a box covering pixels 1..10 spans 0..10 in continuous
  coordinates). x1/y1 are clamped at 0, since some tools write 0-based `xmin = 0`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from safetyvlm.data.records import SPLITS, InvalidInput, SourceExample
from safetyvlm.schema import CATEGORIES

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic"}
)

# The spellings of each split that sources use, in order of preference.
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "valid": ("valid", "val", "validation"),
    "test": ("test",),
}
_SPLIT_OF_WORD = {alias: split for split, aliases in SPLIT_ALIASES.items() for alias in aliases}
# A file name that starts with a split word followed by nothing, '-', '_' or '.'.
_SPLIT_PREFIX = re.compile(r"^(train|validation|valid|val|test)(?=$|[-_.])", re.IGNORECASE)


# --------------------------------------------------------------------------------------- helpers


def _split_of_name(name: str) -> str | None:
    m = _SPLIT_PREFIX.match(name)
    return _SPLIT_OF_WORD[m.group(1).lower()] if m else None


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def _number(value: Any, where: str, what: str) -> float:
    """A finite float from a number or numeric string, else InvalidInput."""
    if isinstance(value, bool):
        raise InvalidInput(where, f"{what} is not a number: {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(where, f"{what} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise InvalidInput(where, f"{what} is not finite: {value!r}")
    return x


def _xyxy(x1: float, y1: float, x2: float, y2: float, where: str) -> list[float]:
    if x2 < x1 or y2 < y1:
        raise InvalidInput(where, f"box has negative size: {[x1, y1, x2, y2]}")
    return [float(x1), float(y1), float(x2), float(y2)]


def _require_dir(root: Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise InvalidInput(str(root), "does not exist")
    return root


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the upright image, from the header only (no pixel decoding)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orientation = im.getexif().get(0x0112)
            except Exception:  # a broken EXIF block must not make a readable image unusable
                orientation = None
    except FileNotFoundError:
        raise InvalidInput(str(path), "image file not found") from None
    except Exception as e:
        raise InvalidInput(str(path), f"not a readable image ({e})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


# --------------------------------------------------------------------------------------- parquet

_SAFETY_SUFFIXES = (
    "_main_purpose",
    "_usage_instructions",
    "_required_ppe",
    "_primary_hazards",
    "_common_misuses",
    "_cleaning",
    "_storage",
    "_maintenance_frequency",
)


def _norm_class(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


_CATEGORY_OF_NORM = {_norm_class(c): c for c in CATEGORIES}


def _parquet_split(path: Path, root: Path) -> str:
    split = _split_of_name(path.name)
    if split:
        return split
    try:
        parents = path.parent.relative_to(root).parts
    except ValueError:
        parents = ()
    for part in reversed(parents):
        split = _SPLIT_OF_WORD.get(part.lower())
        if split:
            return split
    raise InvalidInput(
        str(path),
        "cannot tell the split: name the file train*/valid*/validation*/test*.parquet "
        "or put it in a train/valid/test folder",
    )


def _parquet_columns(names: list[str]) -> dict[str, dict[str, str]]:
    """class name -> {"bboxes": column, "main_purpose": column, ...} for the columns present."""
    prefixes: dict[str, str] = {}  # raw prefix -> reported class name
    for col in names:
        if col.endswith("_bboxes") and len(col) > len("_bboxes"):
            raw = col[: -len("_bboxes")]
            prefixes[raw] = _CATEGORY_OF_NORM.get(_norm_class(raw), raw)
    out: dict[str, dict[str, str]] = {}
    for raw, name in prefixes.items():
        cols = out.setdefault(name, {})
        cols["bboxes"] = raw + "_bboxes"
        for suffix in _SAFETY_SUFFIXES:
            if raw + suffix in names:
                cols[suffix[1:]] = raw + suffix
    return out


def _parse_boxes(value: Any, where: str) -> list[list[float]]:
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip()
        if not text or text.lower() in ("null", "none", "nan"):
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidInput(where, f"boxes are not a JSON list: {e}") from None
        if value is None:
            return []
    if not isinstance(value, (list, tuple)):
        kind = type(value).__name__
        raise InvalidInput(where, f"boxes must be a list of [x1, y1, x2, y2], got {kind}")
    if value and all(not isinstance(v, (list, tuple)) for v in value):
        # a flat list of numbers: one box per four numbers
        if len(value) % 4:
            raise InvalidInput(
                where, f"a flat box list needs a multiple of 4 numbers, got {len(value)}"
            )
        value = [value[i : i + 4] for i in range(0, len(value), 4)]
    boxes = []
    for k, box in enumerate(value):
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise InvalidInput(where, f"box {k} must be [x1, y1, x2, y2], got {box!r}")
        x1, y1, x2, y2 = (_number(v, where, f"box {k} coordinate") for v in box)
        boxes.append(_xyxy(x1, y1, x2, y2, f"{where} (box {k})"))
    return boxes


def _split_items(value: Any, seps: str) -> list[str]:
    """A `;`-separated string (or a list, or a JSON list string) -> stripped, non-empty items.

    `seps` lists separators in order of preference: the first one present in the string is used.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return _split_items(parsed, seps)
        sep = next((s for s in seps if s in text), None)
        items = text.split(sep) if sep else [text]
    elif isinstance(value, (list, tuple)):
        items = [str(v) for v in value if v is not None]
    else:
        items = [str(value)]
    return [s.strip() for s in items if s.strip()]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v).strip() for v in value if v is not None and str(v).strip())
    return str(value).strip()


def _parquet_image(value: Any, where: str, base_dirs: list[Path]) -> tuple[bytes | Path, str]:
    """(bytes or Path, path hint) from an HF Image struct {bytes, path}, plain bytes or a path."""
    data, hint = None, ""
    if isinstance(value, dict):
        data, hint = value.get("bytes"), value.get("path") or ""
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = value
    elif isinstance(value, str):
        hint = value
    elif value is not None:
        kind = type(value).__name__
        raise InvalidInput(where, f"'image' must be an Image struct, bytes or a path, got {kind}")
    if data:
        return bytes(data), hint
    if hint:
        p = Path(hint)
        candidates = [p] if p.is_absolute() else [d / p for d in base_dirs]
        for c in candidates:
            if c.is_file():
                return c, hint
        raise InvalidInput(where, f"image has no bytes and its path {hint!r} is not a file")
    raise InvalidInput(where, "image is empty (no bytes, no path)")


def _parquet_file(path: Path, split: str, root: Path, batch_size: int) -> Iterator[SourceExample]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise InvalidInput(str(path), f"not a readable parquet file ({e})") from None
    names = pf.schema_arrow.names
    if "image" not in names:
        raise InvalidInput(str(path), f"no 'image' column (columns: {names})")
    classes = _parquet_columns(names)
    wanted = ["image"] + (["image_name"] if "image_name" in names else [])
    wanted += [c for cols in classes.values() for c in cols.values()]
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=wanted):
        for rec in batch.to_pylist():
            where = f"{path}:row {row}"
            image, hint = _parquet_image(rec["image"], where, [path.parent, root])
            image_name = _text(rec.get("image_name")) or Path(hint).name or f"{path.stem}_row{row}"
            instances: list[dict] = []
            safety: dict[str, dict] = {}
            for name, cols in classes.items():
                boxes = _parse_boxes(rec.get(cols["bboxes"]), f"{where} column {cols['bboxes']!r}")
                instances += [{"name": name, "bbox_2d": b} for b in boxes]
                fields = {
                    "primary_function": _text(rec.get(cols.get("main_purpose", ""))),
                    "required_ppe": _split_items(rec.get(cols.get("required_ppe", "")), ";,"),
                    "primary_hazards": _split_items(rec.get(cols.get("primary_hazards", "")), ";"),
                    "common_misuses": _split_items(rec.get(cols.get("common_misuses", "")), ";"),
                }
                if any(fields.values()):  # else the builder falls back to the knowledge base
                    safety[name] = fields
            yield SourceExample(
                image_name=image_name,
                split=split,
                image=image,
                instances=instances,
                safety=safety,
                where=where,
            )
            row += 1


def import_parquet(root: Path, *, batch_size: int = 32) -> Iterator[SourceExample]:
    """The tool-safety parquet layout; `root` is the dataset folder or one .parquet file."""
    root = _require_dir(Path(root))
    files = [root] if root.is_file() else sorted(root.rglob("*.parquet"))
    if not files:
        raise InvalidInput(str(root), "no .parquet files found")
    base = root.parent if root.is_file() else root
    by_split: dict[str, list[Path]] = {s: [] for s in SPLITS}
    for f in files:
        by_split[_parquet_split(f, base)].append(f)
    for split in SPLITS:
        for f in by_split[split]:
            yield from _parquet_file(f, split, base, batch_size)


# ------------------------------------------------------------------------------------------ coco

_COCO_NAME = re.compile(r"^instances_(train|validation|valid|val|test)(\d*)\.json$", re.IGNORECASE)


def _coco_files(root: Path) -> list[tuple[str, Path, list[Path]]]:
    """(split, json, image dirs to try) for every annotation file of the layout."""
    found: list[tuple[str, Path, list[Path]]] = []
    for split in SPLITS:
        for alias in SPLIT_ALIASES[split]:
            j = root / alias / "_annotations.coco.json"
            if j.is_file():
                found.append((split, j, [j.parent]))
    for folder in (root / "annotations", root):
        if not folder.is_dir():
            continue
        for j in sorted(folder.glob("*.json")):
            m = _COCO_NAME.match(j.name)
            if not m:
                continue
            word, year = m.group(1), m.group(2)
            tag = word + year  # e.g. val2017
            dirs = [root / "images" / tag, root / "images" / word, root / tag, root / word]
            dirs += [root / "images", root, j.parent]
            found.append((_SPLIT_OF_WORD[word.lower()], j, dirs))
    found.sort(key=lambda t: SPLITS.index(t[0]))
    return found


def _coco_json(path: Path, split: str, image_dirs: list[Path]) -> Iterator[SourceExample]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(str(path), f"not a readable COCO JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InvalidInput(str(path), "not a COCO file: no 'images' list")
    categories: dict[Any, str] = {}
    for k, cat in enumerate(data.get("categories") or []):
        if not isinstance(cat, dict) or "id" not in cat or not str(cat.get("name", "")).strip():
            raise InvalidInput(f"{path}:categories[{k}]", "a category needs an 'id' and a 'name'")
        categories[cat["id"]] = str(cat["name"]).strip()

    images: dict[Any, dict] = {}
    for k, img in enumerate(data["images"]):
        where = f"{path}:images[{k}]"
        if not isinstance(img, dict) or "id" not in img or not img.get("file_name"):
            raise InvalidInput(where, "an image needs an 'id' and a 'file_name'")
        if img["id"] in images:
            raise InvalidInput(where, f"duplicate image id {img['id']!r}")
        images[img["id"]] = img

    instances: dict[Any, list[dict]] = {i: [] for i in images}
    for k, ann in enumerate(data.get("annotations") or []):
        aid = ann.get("id", k) if isinstance(ann, dict) else k
        where = f"{path}:annotations[{k}] (id {aid})"
        if not isinstance(ann, dict):
            raise InvalidInput(where, "an annotation must be an object")
        if ann.get("image_id") not in images:
            iid = ann.get("image_id")
            raise InvalidInput(where, f"refers to image id {iid!r}, which is not in 'images'")
        if ann.get("category_id") not in categories:
            cid = ann.get("category_id")
            raise InvalidInput(where, f"refers to category id {cid!r}, not in 'categories'")
        if ann.get("iscrowd"):
            continue  # a crowd region, not one object
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise InvalidInput(where, f"bbox must be [x, y, w, h], got {bbox!r}")
        x, y, w, h = (_number(v, where, "bbox value") for v in bbox)
        if w < 0 or h < 0:
            raise InvalidInput(where, f"bbox has negative width/height: {bbox}")
        instances[ann["image_id"]].append(
            {"name": categories[ann["category_id"]], "bbox_2d": _xyxy(x, y, x + w, y + h, where)}
        )

    for k, (iid, img) in enumerate(images.items()):
        fn = Path(str(img["file_name"]))
        candidates = [fn] if fn.is_absolute() else [d / fn for d in image_dirs]
        image = next((c for c in candidates if c.is_file()), None)
        if image is None:
            raise InvalidInput(
                f"{path}:images[{k}] (id {iid})",
                f"image file {str(fn)!r} not found (looked in {[str(d) for d in image_dirs]})",
            )
        yield SourceExample(
            image_name=fn.name,
            split=split,
            image=image,
            instances=instances[iid],
            where=f"{path}:image id {iid}",
        )


def import_coco(root: Path) -> Iterator[SourceExample]:
    """COCO: Roboflow `<split>/_annotations.coco.json`, or `annotations/instances_<split>.json`."""
    root = _require_dir(Path(root))
    files = _coco_files(root)
    if not files:
        raise InvalidInput(
            str(root),
            "no COCO annotations found: expected <split>/_annotations.coco.json "
            "or annotations/instances_<split>.json (split: train, val/valid, test)",
        )
    for split, path, dirs in files:
        yield from _coco_json(path, split, dirs)


# ------------------------------------------------------------------------------------------ yolo


def _find_data_yaml(root: Path) -> Path:
    if root.is_file():
        return root
    for name in ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml"):
        if (root / name).is_file():
            return root / name
    yamls = sorted(p for p in [*root.glob("*.yaml"), *root.glob("*.yml")] if p.is_file())
    if len(yamls) == 1:
        return yamls[0]
    raise InvalidInput(str(root), "no data.yaml found (an Ultralytics YOLO dataset needs one)")


def _yolo_names(cfg: dict, where: str) -> list[str]:
    names = cfg.get("names")
    if isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise InvalidInput(where, f"'names' keys must be class ids: {list(names)}") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise InvalidInput(where, f"'names' ids must be 0..{len(by_id) - 1}: {sorted(by_id)}")
        names = [by_id[i] for i in range(len(by_id))]
    if not isinstance(names, list) or not names:
        raise InvalidInput(where, "'names' must be a non-empty list or {id: name} mapping")
    names = [str(n) for n in names]
    nc = cfg.get("nc")
    if nc is not None and nc != len(names):
        raise InvalidInput(where, f"nc is {nc} but 'names' has {len(names)} entries")
    return names


def _yolo_split_images(entry: str, base: Path, root: Path, split: str) -> list[Path] | None:
    """Image files of one data.yaml split entry (a folder or a .txt list), or None if absent."""
    p = Path(entry)
    candidates = [p] if p.is_absolute() else [base / p]
    if entry.startswith("../"):
        candidates.append(base / entry[3:])  # what Ultralytics tries next
    candidates += [root / alias / "images" for alias in SPLIT_ALIASES[split]]
    target = next((c for c in candidates if c.exists()), None)
    if target is None:
        return None
    if target.is_dir():
        return sorted(f for f in target.rglob("*") if _is_image(f))
    # a .txt file listing image paths, one per line, relative to the list's folder
    images = []
    for n, line in enumerate(target.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        q = Path(line)
        options = [q] if q.is_absolute() else [target.parent / q, base / q]
        found = next((o for o in options if o.is_file()), None)
        if found is None:
            raise InvalidInput(f"{target}:{n}", f"listed image {line!r} not found")
        images.append(found)
    return images


def _yolo_label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):  # the last 'images' folder component
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _yolo_labels(label: Path, image: Path, names: list[str], pose: bool) -> list[dict]:
    try:
        lines = label.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(str(label), f"cannot read label file ({e})") from None
    size = None
    out = []
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label}:{n}"
        n_fields = len(fields)
        polygon_ok = n_fields >= 7 and n_fields % 2 == 1
        if n_fields < 5 or (not pose and n_fields > 5 and not polygon_ok):
            raise InvalidInput(
                where,
                f"expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...', "
                f"got {n_fields} fields",
            )
        cls = _number(fields[0], where, "class id")
        if cls != int(cls) or not 0 <= cls < len(names):
            raise InvalidInput(where, f"class id {fields[0]} out of range 0..{len(names) - 1}")
        values = [_number(v, where, "coordinate") for v in fields[1:]]
        if size is None:
            size = _image_size(image)
        W, H = size
        if len(values) == 4 or pose:
            cx, cy, w, h = values[:4]
            if w < 0 or h < 0:
                raise InvalidInput(where, f"negative width/height: {w} {h}")
            box = [(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H]
        else:
            xs, ys = values[0::2], values[1::2]
            box = [min(xs) * W, min(ys) * H, max(xs) * W, max(ys) * H]
        out.append({"name": names[int(cls)], "bbox_2d": _xyxy(*box, where)})
    return out


def import_yolo(root: Path) -> Iterator[SourceExample]:
    """Ultralytics YOLO txt labels + data.yaml; `root` is the dataset folder or the yaml file."""
    root = _require_dir(Path(root))
    data_yaml = _find_data_yaml(root)
    root = data_yaml.parent
    try:
        cfg = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InvalidInput(str(data_yaml), f"not a readable YAML file ({e})") from None
    if not isinstance(cfg, dict):
        raise InvalidInput(str(data_yaml), "must be a mapping with 'names' and split paths")
    names = _yolo_names(cfg, str(data_yaml))
    pose = "kpt_shape" in cfg

    base = root
    if cfg.get("path"):
        p = Path(str(cfg["path"]))
        p = p if p.is_absolute() else root / p
        base = p if p.is_dir() else root

    keys = {"train": ("train",), "valid": ("val", "valid", "validation"), "test": ("test",)}
    splits: dict[str, list[Path]] = {}
    for split in SPLITS:
        key = next((k for k in keys[split] if cfg.get(k)), None)
        if key is None:
            continue
        entries = cfg[key] if isinstance(cfg[key], list) else [cfg[key]]
        for entry in entries:
            found = _yolo_split_images(str(entry), base, root, split)
            if found is None:
                log.warning("%s: %s path %r not found; it yields nothing", data_yaml, key, entry)
                continue
            splits.setdefault(split, []).extend(found)
    if not splits:
        raise InvalidInput(
            str(data_yaml),
            "none of the split paths (train/val/test) exist, nor <root>/<split>/images",
        )

    for split in SPLITS:
        for image in splits.get(split, []):
            label = _yolo_label_path(image)
            instances = _yolo_labels(label, image, names, pose) if label.is_file() else []
            yield SourceExample(
                image_name=image.name,
                split=split,
                image=image,
                instances=instances,
                where=str(label if label.is_file() else image),
            )


# ------------------------------------------------------------------------------------------- voc


def _voc_text(el: ET.Element, tag: str) -> str:
    child = el.find(tag)
    return (child.text or "").strip() if child is not None else ""


def _voc_xml(xml: Path) -> tuple[str, list[dict]]:
    """(filename from the XML, instances) of one VOC annotation file."""
    try:
        tree = ET.parse(xml)
    except (OSError, ET.ParseError) as e:
        raise InvalidInput(str(xml), f"not a readable XML file ({e})") from None
    ann = tree.getroot()
    if ann.tag != "annotation":
        raise InvalidInput(str(xml), f"root element is <{ann.tag}>, expected <annotation>")
    out = []
    for k, obj in enumerate(ann.findall("object")):
        where = f"{xml}:object {k}"
        name = _voc_text(obj, "name")
        if not name:
            raise InvalidInput(where, "object has no <name>")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise InvalidInput(where, f"object {name!r} has no <bndbox>")
        xmin, ymin, xmax, ymax = (
            _number(_voc_text(bnd, t), where, f"<{t}>") for t in ("xmin", "ymin", "xmax", "ymax")
        )
        if xmax < xmin or ymax < ymin:
            raise InvalidInput(where, f"bndbox has negative size: {[xmin, ymin, xmax, ymax]}")
        # 1-based inclusive pixel indices -> continuous pixel coordinates
        out.append({"name": name, "bbox_2d": [max(0.0, xmin - 1), max(0.0, ymin - 1), xmax, ymax]})
    return _voc_text(ann, "filename"), out


def _voc_image(folder: Path, filename: str, stem: str) -> Path | None:
    if filename:
        p = folder / Path(filename).name
        if p.is_file():
            return p
    for suffix in (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".bmp", ".tif", ".webp"):
        p = folder / (stem + suffix)
        if p.is_file():
            return p
    return None


def _voc_devkit(root: Path) -> Iterator[SourceExample]:
    sets = root / "ImageSets" / "Main"
    files: list[tuple[str, Path]] = []
    for split in SPLITS:
        lists = [sets / f"{alias}.txt" for alias in SPLIT_ALIASES[split]]
        f = next((x for x in lists if x.is_file()), None)
        if f is not None:
            files.append((split, f))
    if not files:
        raise InvalidInput(str(sets), "no train.txt / val.txt / test.txt split lists (VOC layout)")
    for split, listing in files:
        for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            image_id = fields[0]
            xml = root / "Annotations" / f"{image_id}.xml"
            if not xml.is_file():
                raise InvalidInput(f"{listing}:{n}", f"annotation {xml} not found")
            filename, instances = _voc_xml(xml)
            image = _voc_image(root / "JPEGImages", filename, image_id)
            if image is None:
                wanted = filename or image_id
                raise InvalidInput(str(xml), f"image {wanted!r} not found in {root / 'JPEGImages'}")
            yield SourceExample(image.name, split, image, instances, where=str(xml))


def _voc_split_folder(folder: Path, split: str) -> Iterator[SourceExample]:
    used: set[Path] = set()
    for xml in sorted(folder.glob("*.xml")):
        filename, instances = _voc_xml(xml)
        image = _voc_image(folder, filename, xml.stem)
        if image is None:
            raise InvalidInput(str(xml), f"image {filename or xml.stem!r} not found in {folder}")
        used.add(image)
        yield SourceExample(image.name, split, image, instances, where=str(xml))
    for image in sorted(p for p in folder.iterdir() if _is_image(p) and p not in used):
        yield SourceExample(image.name, split, image, [], where=str(image))


def import_voc(root: Path) -> Iterator[SourceExample]:
    """Pascal VOC: `Annotations/` + `JPEGImages/` + `ImageSets/Main/*.txt`, or split folders."""
    root = _require_dir(Path(root))
    if (root / "Annotations").is_dir():
        yield from _voc_devkit(root)
        return
    folders = [
        (split, root / alias)
        for split in SPLITS
        for alias in SPLIT_ALIASES[split]
        if (root / alias).is_dir()
    ]
    if not folders:
        raise InvalidInput(
            str(root),
            "unknown VOC layout: expected Annotations/ + JPEGImages/ + ImageSets/Main/, "
            "or train/ valid/ test/ folders holding images and .xml files",
        )
    for split, folder in folders:
        yield from _voc_split_folder(folder, split)


# -------------------------------------------------------------------------------------- dispatch

IMPORTERS: dict[str, Callable[[Path], Iterator[SourceExample]]] = {
    "parquet": import_parquet,
    "coco": import_coco,
    "yolo": import_yolo,
    "voc": import_voc,
}


def iter_source(source: str, root: str | Path) -> Iterator[SourceExample]:
    """The examples of `root` read as `source` (one of `IMPORTERS`)."""
    key = str(source).strip().lower()
    if key not in IMPORTERS:
        raise ValueError(f"unknown source {source!r}; expected one of {sorted(IMPORTERS)}")
    return IMPORTERS[key](Path(root))

