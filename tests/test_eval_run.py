"""The eval stage's runner and `safetyvlm eval` on the shipped tiny models and a few rendered images."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from test_rag import embedder, faiss_index, small_kb  # noqa: F401  (session fixtures)

from safetyvlm.cli import main
from safetyvlm.data.dataset import DatasetParams, build_dataset
from safetyvlm.eval import run as run_mod
from safetyvlm.eval.report import write_report
from safetyvlm.eval.run import Condition, EvalConfig, run_eval
from safetyvlm.rag.config import RagConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "shipped"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun") / "dataset"
    build_dataset(DatasetParams.from_dict({"sizes": {"train": 2, "valid": 2, "test": 3}, "seed": 11,
                                           "shifted": {"size": 2, "render": {"backgrounds": ["mat"]}}}), out)
    return out


def test_config_from_params_and_its_errors():
    cfg = EvalConfig.from_dict(yaml.safe_load((ROOT / "params.yaml").read_text())["eval"])
    assert cfg.split == "test" and {c.name for c in cfg.conditions} >= {"zero-shot", "preference-trained"}
    assert any(c.retrieval for c in cfg.conditions)
    assert cfg.conditions[0].model.format(family="mllama") == "models/base/mllama"
    with pytest.raises(ValueError, match="duplicate"):
        EvalConfig.from_dict({"conditions": [{"name": "a", "model": "x"}, {"name": "a", "model": "y"}]})
    with pytest.raises(ValueError, match="unknown keys"):
        EvalConfig.from_dict({"conditions": [{"name": "a", "model": "x", "rag": True}]})
    with pytest.raises(ValueError, match="judge"):
        EvalConfig.from_dict({"judge": "gpt"})
    with pytest.raises(ValueError, match="eval.cache must be one of dynamic, static"):
        EvalConfig.from_dict({"cache": "paged"})
    assert cfg.shifted["split"] == "test_shifted" and set(cfg.shifted["conditions"]) <= {c.name for c in cfg.conditions}


def test_shifted_rows_need_the_split_and_known_condition_names(dataset_dir, tmp_path):
    bad = EvalConfig.from_dict({"conditions": [{"name": "a", "model": "x"}],
                                "shifted": {"images": 1, "conditions": ["b"]}})
    with pytest.raises(ValueError, match="not eval.conditions names"):
        run_eval(bad, dataset_dir)
    from safetyvlm.data.dataset import DatasetParams, build_dataset

    plain = tmp_path / "plain"
    build_dataset(DatasetParams.from_dict({"sizes": {"train": 1, "valid": 1, "test": 1}, "shifted": {}}), plain)
    missing = EvalConfig.from_dict({"conditions": [{"name": "a", "model": "x"}], "shifted": {"images": 1}})
    with pytest.raises(ValueError, match="no split 'test_shifted'"):
        run_eval(missing, plain)


def test_a_base_dir_that_records_a_checkpoint_resolves_to_it(tmp_path):
    (tmp_path / "base" / "qwen2_5_vl").mkdir(parents=True)
    (tmp_path / "base" / "qwen2_5_vl" / "base_record.json").write_text(json.dumps({"path": "/models/real-7b"}))
    cond = Condition(name="zero-shot", model=str(tmp_path / "base" / "{family}"))
    assert cond.model_dir("qwen2_5_vl") == "/models/real-7b"


@pytest.mark.slow
def test_every_condition_is_scored_and_retrieval_reuses_the_plain_first_pass(dataset_dir, faiss_index,  # noqa: F811
                                                                           embedder, monkeypatch, tmp_path):  # noqa: F811
    from safetyvlm.rag import index as index_mod

    model = str(SHIPPED / "{family}-tiny")
    cfg = EvalConfig.from_dict({"families": ["qwen2_5_vl"], "images": 2, "max_new_tokens": 24, "latency_images": 1,
                                "conditions": [{"name": "plain", "model": model},
                                               {"name": "plain + RAG", "model": model, "retrieval": True},
                                               {"name": "plain grounded", "model": model, "ground": True}],
                                "shifted": {"images": 1, "conditions": ["plain"]}})
    calls, generated = [], []
    real, real_generate = run_mod.evaluate_model, run_mod.generate_answers

    def spy(*args, **kw):
        calls.append(kw.get("first_pass"))
        return real(*args, **kw)

    def spy_generate(*args, **kw):
        generated.append(kw.get("retriever") is not None)
        return real_generate(*args, **kw)

    monkeypatch.setattr(run_mod, "evaluate_model", spy)
    monkeypatch.setattr(run_mod, "generate_answers", spy_generate)
    real_load = index_mod.load_retriever
    monkeypatch.setattr(index_mod, "load_retriever", lambda d, c=None: real_load(d, c, embeddings=embedder))
    results = run_eval(cfg, dataset_dir, faiss_index[0], RagConfig())
    assert calls[0] is None and len(calls[1]) == 2  # the RAG row got the plain row's two answers
    # the grounded row scored the plain row's answers, not new ones; the shifted row answered its own images
    assert generated == [False, True, False]
    rows = results["qwen2_5_vl"]
    assert set(rows) == {"plain", "plain + RAG", "plain grounded", "plain · shifted"}
    shifted = rows.pop("plain · shifted")
    assert shifted["n_images"] == 1 and shifted["split"] == "test_shifted" and rows["plain"]["split"] == "test"
    # the same model answering the same way: its latency is the main split's row's, not timed twice
    assert shifted["latency_p50"] is None and shifted["latency"] is None
    for name, m in rows.items():
        assert m["n_images"] == 2 and m["retrieval"] == name.endswith("RAG")
        assert m["grounded"] == name.endswith("grounded")
        assert m["latency"]["n"] == 1 and m["latency_p50"] > 0
        assert 0 <= m["json_valid"] <= 1 and 0 <= m["overall"] <= 10
    plain, grounded = rows["plain"], rows["plain grounded"]
    assert [grounded[k] for k in ("tp", "fp", "fn", "json_valid", "latency_p50")] == [
        plain[k] for k in ("tp", "fp", "fn", "json_valid", "latency_p50")]
    paths = write_report(results, tmp_path / "eval.json", tmp_path / "results.md", tmp_path / "plots")
    doc = json.loads(Path(paths["metrics"]).read_text())
    assert set(doc["qwen2_5_vl"]) == set(rows) and "answers" not in doc["qwen2_5_vl"]["plain"]
    assert "per_image" not in doc["qwen2_5_vl"]["plain"] and set(doc["qwen2_5_vl"]["plain"]["ci"]) >= {"f1"}
    table = Path(paths["table"]).read_text().split("## All columns\n\n")[1].split("\n\n")[0].splitlines()
    assert table[0].startswith("| Model family | Condition | Precision | Recall | F1 | IoU | Instruction Accuracy | Overall")
    assert len(table) == 5 and table[-1].endswith("| KB |") and table[2].endswith("| model |")


@pytest.mark.slow
def test_cli_eval_prints_the_metrics_of_one_model(dataset_dir):
    res = CliRunner().invoke(main, ["eval", "--model", str(SHIPPED / "mllama-tiny"), "--dataset", str(dataset_dir),
                                    "--images", "2", "--split", "test"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["n_images"] == 2 and m["retrieval"] is False and "answers" not in m
    assert {"precision", "recall", "f1", "map", "claim_hallucination", "latency_p50"} <= set(m)
    bad = CliRunner().invoke(main, ["eval", "--model", str(SHIPPED / "mllama-tiny"), "--dataset", str(dataset_dir),
                                    "--split", "holdout"])
    assert bad.exit_code != 0 and "no split 'holdout'" in bad.output


def test_same_weights_compares_the_weight_files_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "model.safetensors").write_bytes(b"\x01" * 64)
    (a / "config.json").write_text("{}")
    shutil.copytree(a, b)
    (b / "config.json").write_text('{"other": 1}')  # only weights count
    assert run_mod.same_weights(a, b)
    (b / "model.safetensors").write_bytes(b"\x01" * 63 + b"\x02")  # same size, one byte differs
    assert not run_mod.same_weights(a, b)
    (b / "model.safetensors").write_bytes(b"\x01" * 65)
    assert not run_mod.same_weights(a, b)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not run_mod.same_weights(empty, empty)  # no weights: nothing to call the same


@pytest.mark.slow
def test_a_copied_model_scores_the_answers_of_the_one_it_copies(dataset_dir, monkeypatch, tmp_path):
    """What the preference stage leaves when it kept no pair: a copy of the finetune. Its rows are scored on
    the first model's answers instead of generating them again, and name the model they came from."""
    copy = tmp_path / "copy"
    shutil.copytree(SHIPPED / "qwen2_5_vl-tiny", copy)
    cfg = EvalConfig.from_dict({"families": ["qwen2_5_vl"], "images": 2, "max_new_tokens": 16, "latency_images": 1,
                                "conditions": [{"name": "first", "model": str(SHIPPED / "{family}-tiny")},
                                               {"name": "copy", "model": str(copy)}],
                                "shifted": {"images": 0}})
    generated = []
    real_generate = run_mod.generate_answers

    def spy_generate(model_dir, *args, **kw):
        generated.append(model_dir)
        return real_generate(model_dir, *args, **kw)

    monkeypatch.setattr(run_mod, "generate_answers", spy_generate)
    rows = run_eval(cfg, dataset_dir)["qwen2_5_vl"]
    first = str(SHIPPED / "qwen2_5_vl-tiny")
    assert generated == [first]
    assert rows["copy"]["model"] == str(copy) and rows["copy"]["answered_by"] == first
    same = ("tp", "fp", "fn", "json_valid")
    assert [rows["copy"][k] for k in same] == [rows["first"][k] for k in same]
