"""`safetyvlm` command line: look at data, the schema and model answers without DVC."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import click
import yaml
from PIL import Image
from rich.console import Console
from rich.table import Table

from safetyvlm.data.dataset import load_dataset_dir
from safetyvlm.data.preview import sample_grid
from safetyvlm.eval.hallucination import ClaimChecker
from safetyvlm.eval.report import metrics_document
from safetyvlm.eval.run import EvalConfig, evaluate_model, make_judge
from safetyvlm.kb import KB_DIR, load_kb, write_manifest
from safetyvlm.parse import parse_report
from safetyvlm.rag.config import RagConfig
from safetyvlm.schema import CATEGORIES, report_json_schema, write_json_schema
from safetyvlm.serve.analyzer import Analyzer
from safetyvlm.serve.config import ServeConfig
from safetyvlm.serve.package import PackageConfig

DEFAULT_DATASET = "data/dataset"


@click.group()
@click.version_option(package_name="safetyvlm")
@click.option("--params", "params_path", default="params.yaml", show_default=True, envvar="SAFETYVLM_PARAMS",
              type=click.Path(dir_okay=False), help="The project's params.yaml, for the defaults of predict and eval.")
@click.pass_context
def main(ctx, params_path: str) -> None:
    """SafetyVLM: find hand tools in a photo and say how to use them safely."""
    ctx.obj = {"params": params_path}


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Write the JSON Schema here instead of stdout.")
def schema(out: str | None) -> None:
    """Print the output contract's JSON Schema."""
    if out:
        click.echo(f"wrote {write_json_schema(out)}")
    else:
        click.echo(json.dumps(report_json_schema(), indent=2))


@main.command()
@click.argument("file", type=click.File("r"), default="-")
@click.option("--width", type=int, help="Image width, to clip boxes.")
@click.option("--height", type=int, help="Image height, to clip boxes.")
def parse(file, width: int | None, height: int | None) -> None:
    """Parse a model answer (FILE or stdin) into the contract; exit 1 if it was not strictly valid."""
    size = (width, height) if width and height else None
    result = parse_report(file.read(), image_size=size)
    click.echo(result.report.model_dump_json(indent=2))
    for err in result.errors:
        click.echo(f"invalid: {err}", err=True)
    sys.exit(0 if result.valid else 1)


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "model_ref", default=None,
              help="A model dir, a packaged tag (safetyvlm:latest) or a cached hub id. "
                   "Default: the final model, models/final/<package.family>/merged.")
@click.option("--retrieval/--no-retrieval", default=None,
              help="Answer in two passes with passages from --rag. Default: serve.retrieval_default, as /analyze.")
@click.option("--rag", "rag_dir", default="data/rag", show_default=True, type=click.Path(file_okay=False),
              help="The retrieval index (dvc repro rag-index).")
@click.option("--ground/--no-ground", default=None,
              help="Each tool's safety fields from the knowledge base entry of its name. Default: serve.ground, "
                   "as /analyze; --no-ground prints the model's own text.")
@click.option("--max-new-tokens", type=int, default=None, help="Default: serve.max_new_tokens.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--raw", is_flag=True, help="Also print the model's raw text.")
@click.pass_context
def predict(ctx, images, model_ref: str | None, retrieval: bool | None, rag_dir: str, ground: bool | None,
            max_new_tokens: int | None, batch_size: int, raw: bool) -> None:
    """Answer for each IMAGE as /analyze does: the report (boxes in the image's pixels) as JSON lines."""
    from safetyvlm.model.loader import ModelLoadError, resolve_source  # transformers: only to answer

    pictures = [_read_image(path) for path in images]  # every image checked before a model is loaded
    serve = ServeConfig.from_dict(_section(ctx, "serve"))
    family = PackageConfig.from_dict(_section(ctx, "package")).family
    if model_ref is None:
        model_ref = f"models/final/{family}/merged"
        if not Path(model_ref, "config.json").is_file():
            raise click.ClickException(
                f"the final model {model_ref} is not there: build it with `dvc repro` (or fetch it with "
                f"`dvc pull`), or pass --model, e.g. --model models/shipped/{family}-tiny")
    elif not Path(model_ref).expanduser().is_dir() and ":" not in model_ref:
        try:  # a hub id: only from the local cache (the message says how to download it)
            model_ref = str(resolve_source(model_ref)[0])
        except ModelLoadError as err:
            raise click.ClickException(str(err)) from None
    want_retrieval = serve.retrieval_default if retrieval is None else retrieval
    if retrieval and not Path(rag_dir).is_dir():
        raise click.ClickException(f"--retrieval needs the index {rag_dir}: build it with `dvc repro rag-index`, "
                                   f"or pass --rag DIR")
    cfg = ServeConfig.from_dict({**serve.to_dict(), "model": model_ref,
                                 "rag": rag_dir if want_retrieval and Path(rag_dir).is_dir() else None,
                                 "ground": serve.ground if ground is None else ground,
                                 "max_new_tokens": max_new_tokens or serve.max_new_tokens})
    analyzer = _load(cfg, _analyzer)
    for start in range(0, len(pictures), batch_size):
        chunk = pictures[start:start + batch_size]
        answers = analyzer.analyze(chunk, [want_retrieval] * len(chunk), [None] * len(chunk))
        for path, answer in zip(images[start:start + batch_size], answers):
            line = {"image": path, "valid": answer.valid, "report": answer.report, "retrieval": answer.retrieval,
                    "grounded": answer.grounded}
            if answer.passage_ids:
                line["passages"] = answer.passage_ids
            if answer.errors:
                line["errors"] = answer.errors
            if raw:
                line["raw"] = answer.raw_text
            click.echo(json.dumps(line))


def _read_image(path: str):
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as err:
        raise click.ClickException(f"{path}: not a readable image ({err})") from None


def _analyzer(cfg):
    from safetyvlm.model.loader import ModelLoadError

    try:
        return Analyzer(cfg)
    except ModelLoadError as err:
        raise click.ClickException(str(err)) from None


@main.group()
def dataset() -> None:
    """Inspect the built dataset."""


@dataset.command("show")
@click.option("--path", default=DEFAULT_DATASET, show_default=True, type=click.Path(file_okay=False))
def dataset_show(path: str) -> None:
    """Print a summary: images, boxes and classes per split."""
    dd = _load(path, load_dataset_dir)
    table = Table(title=f"{path}")
    table.add_column("class")
    counts = {}
    for split, ds in dd.items():
        table.add_column(split, justify="right")
        counts[split] = Counter(i["name"] for insts in ds["instances"] for i in insts)
    for c in CATEGORIES:
        table.add_row(c, *(str(counts[s][c]) for s in dd))
    table.add_row("[bold]images", *(f"[bold]{len(dd[s])}" for s in dd))
    table.add_row("[bold]boxes", *(f"[bold]{sum(counts[s].values())}" for s in dd))
    Console().print(table)
    sources = sorted({src for ds in dd.values() for src in ds.unique("source")})
    click.echo(f"source: {', '.join(sources)}")


@dataset.command("render-sample")
@click.option("--path", default=DEFAULT_DATASET, show_default=True, type=click.Path(file_okay=False))
@click.option("--split", default="train", show_default=True)
@click.option("-n", "count", default=16, show_default=True, help="Images in the grid.")
@click.option("--columns", default=4, show_default=True)
@click.option("--out", default="sample.png", show_default=True, type=click.Path(dir_okay=False))
def dataset_render_sample(path: str, split: str, count: int, columns: int, out: str) -> None:
    """Write a PNG grid of images with their boxes drawn, to look at what the model learns from."""
    dd = _load(path, load_dataset_dir)
    if split not in dd:
        raise click.BadParameter(f"no split {split!r}; have {list(dd)}", param_hint="--split")
    ds = dd[split]
    rows = [ds[i] for i in range(min(count, len(ds)))]
    sample_grid(rows, columns=columns).save(out)
    click.echo(f"wrote {out} ({len(rows)} images from {split})")


@main.group()
def kb() -> None:
    """The knowledge base and retrieval corpus."""


@kb.command("rehash")
def kb_rehash() -> None:
    """Record the KB files' sha256 in kb/manifest.json after an intended, reviewed edit."""
    for name, digest in write_manifest(KB_DIR).items():
        click.echo(f"{digest}  {name}")


@main.command("eval")
@click.pass_context
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A model dir (merged finetune, final, or base).")
@click.option("--split", default="test", show_default=True)
@click.option("--dataset", "dataset_dir", default=DEFAULT_DATASET, show_default=True, type=click.Path(file_okay=False))
@click.option("--images", type=int, default=None, help="First N images of the split (default: eval.images in params.yaml).")
@click.option("--retrieval/--no-retrieval", default=False, show_default=True,
              help="Answer in two passes with passages from --rag.")
@click.option("--rag", "rag_dir", default="data/rag", show_default=True, type=click.Path(file_okay=False))
@click.option("--judge", type=click.Choice(["local", "openai"]), default=None, help="Default: eval.judge in params.yaml.")
def eval_model(ctx, model_dir: str, split: str, dataset_dir: str, images: int | None, retrieval: bool, rag_dir: str,
               judge: str | None) -> None:
    """Evaluate one model on a split with the eval stage's metrics; prints them as JSON."""
    from safetyvlm.model.loader import ModelLoadError, read_family

    section = _section(ctx, "eval")
    if images is not None:
        section["images"] = images
    if judge is not None:
        section["judge"] = judge
    section["split"] = split
    cfg = EvalConfig.from_dict(section)
    dd = _load(dataset_dir, load_dataset_dir)
    if split not in dd:
        raise click.ClickException(f"no split {split!r} in {dataset_dir}; it has {', '.join(dd)}")
    rows = dd[split].select(range(len(dd[split]) if cfg.images is None else min(cfg.images, len(dd[split]))))
    retriever = None
    if retrieval:
        from safetyvlm.rag.index import load_retriever  # LangChain and the embedder: only with retrieval

        retriever = _load(rag_dir, lambda p: load_retriever(p, RagConfig.from_dict(_section(ctx, "rag"))))
    kb = load_kb()
    claims = ClaimChecker(kb, threshold=cfg.claim_threshold)
    try:
        family = read_family(Path(model_dir))
        metrics, _ = evaluate_model(model_dir, family, rows, cfg, retriever=retriever,
                                    judge=make_judge(cfg, claims), claims=claims, kb=kb)
    except ModelLoadError as err:
        raise click.ClickException(str(err)) from None
    click.echo(json.dumps(metrics_document({family: {"model": metrics}})[family]["model"], indent=2))


def _section(ctx, name: str) -> dict:
    """A section of the project's params.yaml (--params), read once per command: a missing or broken file, or a
    missing section, is an error that says so, never silent defaults."""
    root = ctx.find_root().obj
    path = Path(root["params"])
    if "loaded" not in root:
        try:
            root["loaded"] = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise click.ClickException(f"{path} not found (in {Path.cwd()}): run safetyvlm in the project's root, "
                                       f"or pass --params FILE (or set SAFETYVLM_PARAMS)") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise click.ClickException(f"{path} cannot be read as YAML: {err}") from None
    params = root["loaded"]
    if not isinstance(params, dict) or not isinstance(params.get(name), dict):
        raise click.ClickException(f"{path} has no `{name}:` section (a mapping): is it this project's params.yaml?")
    return dict(params[name])


def _load(path: str, loader):
    try:
        return loader(path)
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from None


if __name__ == "__main__":
    main()
