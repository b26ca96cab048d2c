"""One source for defaults: each params.yaml section equals its config dataclass built with no arguments,
and lists every field, so the library called without params.yaml runs the pipeline's recipe and a reader of
params.yaml sees every knob (issue 19, item 6)."""

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from safetyvlm.data.dataset import DatasetParams
from safetyvlm.eval.run import EvalConfig
from safetyvlm.rag.config import RagConfig
from safetyvlm.serve.config import ServeConfig
from safetyvlm.serve.package import PackageConfig
from safetyvlm.train.preferences import PrefsConfig
from safetyvlm.train.pretrain import BaseTrainConfig
from safetyvlm.train.sft import FinetuneConfig

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())

# The only fields whose params.yaml value is not the dataclass default (and which a section may leave out),
# each for a reason:
NOT_DEFAULTS = {
    # project data, not a setting: the names of the real-photo fixture in tests/fixtures/real-tools
    ("dataset", "class_map"),
    # the stage passes the top-level `families` list (written once for dvc.yaml's foreach)
    ("eval", "families"),
}


def comparable(field: str, value):
    """`render` (RenderConfig fields over its defaults) compares as the scenes it makes: a key set to its
    default changes nothing."""
    from safetyvlm.data.render import RenderConfig

    return RenderConfig.from_dict(value) if field == "render" else value


def section(path: str) -> dict:
    node = PARAMS
    for key in path.split("."):
        node = node[key]
    return node


CASES = [("base.train", BaseTrainConfig), ("dataset", DatasetParams), ("finetune", FinetuneConfig),
         ("rag", RagConfig), ("grpo", PrefsConfig), ("eval", EvalConfig), ("package", PackageConfig),
         ("serve", ServeConfig)]


@pytest.mark.parametrize("path,cls", CASES, ids=[c[0] for c in CASES])
def test_params_section_equals_the_dataclass_defaults(path, cls):
    name = path.split(".")[0]
    raw = {k: v for k, v in section(path).items() if (name, k) not in NOT_DEFAULTS}
    built, default = cls.from_dict(raw), cls()
    differ = {f.name: (getattr(built, f.name), getattr(default, f.name)) for f in fields(cls)
              if (name, f.name) not in NOT_DEFAULTS
              and comparable(f.name, getattr(built, f.name)) != comparable(f.name, getattr(default, f.name))}
    assert not differ, f"params.yaml {path} (left) and {cls.__name__}() (right) disagree: {differ}"


@pytest.mark.parametrize("path,cls", CASES, ids=[c[0] for c in CASES])
def test_params_section_lists_every_field(path, cls):
    name = path.split(".")[0]
    missing = [f.name for f in fields(cls) if f.name not in section(path) and (name, f.name) not in NOT_DEFAULTS]
    assert not missing, f"params.yaml {path} does not list {missing} ({cls.__name__} fields)"


def test_nested_sections_list_every_field_too():
    from safetyvlm.prefs.pairs import PairsConfig
    from safetyvlm.train.dpo import DPOParams
    from safetyvlm.train.grpo import GRPOParams
    from safetyvlm.rag.config import (ChunkingConfig, EmbeddingConfig, PgvectorConfig, PineconeConfig,
                                      RetrieveConfig)

    for path, cls in [("grpo.pairs", PairsConfig), ("grpo.dpo", DPOParams), ("grpo.grpo", GRPOParams),
                      ("rag.chunking", ChunkingConfig), ("rag.embedding", EmbeddingConfig),
                      ("rag.retrieve", RetrieveConfig), ("rag.pgvector", PgvectorConfig),
                      ("rag.pinecone", PineconeConfig)]:
        missing = [f.name for f in fields(cls) if f.name not in section(path)]
        assert not missing, f"params.yaml {path} does not list {missing}"


def test_the_eval_families_default_is_the_top_level_list():
    assert EvalConfig().families == PARAMS["families"]


def test_the_comparison_catches_a_drifted_default():
    """The check is not vacuous: a params value off its default is reported."""
    drifted = {**section("finetune"), "rag_fraction": 0.25}
    assert FinetuneConfig.from_dict(drifted) != FinetuneConfig()
    assert FinetuneConfig.from_dict(section("finetune")) == FinetuneConfig()


def test_the_bases_are_scored_on_the_datasets_own_render_settings():
    """base.train.eval_render / eval_shifted restate dataset.render / dataset.shifted.render (a dataclass
    field cannot point at another section): a change to one without the other would score the bases on
    scenes the pipeline's test splits no longer have."""
    from safetyvlm.data.render import RenderConfig

    train, dataset = PARAMS["base"]["train"], PARAMS["dataset"]
    assert RenderConfig.from_dict(train["eval_render"]) == RenderConfig.from_dict(dataset["render"])
    shifted = {**dataset["render"], **dataset["shifted"]["render"]}
    assert RenderConfig.from_dict({**train["eval_render"], **train["eval_shifted"]}) == RenderConfig.from_dict(shifted)
