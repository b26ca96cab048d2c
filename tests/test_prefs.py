"""Preference stages on the shipped tiny models: pair building and filtering, real DPO and GRPO steps,
SFT samples with retrieved context."""

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from test_rag import embedder, faiss_index, small_kb  # noqa: F401  (session fixtures)

from safetyvlm.data.dataset import DatasetParams, build_dataset, load_dataset_dir
from safetyvlm.model.boxes import model_frame
from safetyvlm.model.loader import load_model
from safetyvlm.model.prompts import INSTRUCTION, assistant_message, build_messages, target_text
from safetyvlm.prefs.pairs import build_pairs, load_pairs, select_pairs
from safetyvlm.prefs.rewards import REWARD_NAMES as REWARDS
from safetyvlm.rag.config import RagConfig
from safetyvlm.rag.index import load_retriever
from safetyvlm.train.preferences import PrefsConfig, train_preferences

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "shipped"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("prefs") / "dataset"
    build_dataset(DatasetParams.from_dict({"sizes": {"train": 6, "valid": 2, "test": 2}, "seed": 5, "shifted": {}}), out)
    return load_dataset_dir(out)


@pytest.fixture(scope="module")
def tiny_retriever(faiss_index, embedder):  # noqa: F811
    return load_retriever(faiss_index[0], RagConfig.from_dict({"retrieve": {"k": 2}}), embeddings=embedder)


def gold_pairs(dataset, processor, family: str) -> Dataset:
    """chosen = the exact training target, rejected = an empty answer: a preference a few steps can learn."""
    frame = model_frame(family, processor)
    from safetyvlm.train.sft import report_of

    rows = []
    for row in dataset["train"]:
        gold = target_text(report_of(row["instances"]), row["image"].size, frame)
        rows.append({"images": [row["image"]], "prompt": build_messages(),
                     "chosen": [assistant_message(gold)], "rejected": [assistant_message('{"tools": []}')]})
    return Dataset.from_list(rows)


@pytest.mark.slow
def test_pairs_are_scored_filtered_by_margin_and_stored_without_passages(dataset, tiny_retriever):
    model, processor, _ = load_model(SHIPPED / "qwen2_5_vl-tiny", dtype="float32")
    cfg = PrefsConfig.from_dict({"pairs": {"images": 4, "margin": -2.0, "max_new_tokens": 48, "batch_size": 4}})
    everything, m = build_pairs(model, processor, "qwen2_5_vl", dataset["train"], tiny_retriever, cfg.pairs)
    assert m["images"] == 4 and m["kept"] == 4 and len(everything) == 4   # margin -2 keeps every pair
    gains = [c - r for c, r in zip(everything["chosen_score"], everything["rejected_score"])]
    assert m["chosen_better"] == sum(g > 0 for g in gains) and m["rejected_better"] == sum(g < 0 for g in gains)
    for prompt, chosen in zip(everything["prompt"], everything["chosen"]):
        # the stored prompt is the inference prompt without passages
        assert [c["type"] for c in prompt[0]["content"]] == ["image", "text"]
        assert prompt[0]["content"][1]["text"] == INSTRUCTION
        assert '"sources"' not in chosen[0]["content"][0]["text"]
    assert set(m["per_reward_mean"]) == {"json_validity", "detection_quality", "safety_grounding", "format_length"}


def test_an_unknown_kv_cache_for_the_pairs_is_a_clear_error():
    from safetyvlm.prefs.pairs import PairsConfig

    with pytest.raises(ValueError, match="grpo.pairs.cache must be one of dynamic, static, got 'paged'"):
        PairsConfig(cache="paged")


def test_select_pairs_keeps_exactly_those_beating_the_margin():
    from PIL import Image

    def record(i, chosen, rejected):
        return {"row": i, "image": Image.new("RGB", (8, 8)), "chosen": "{}", "rejected": "{}",
                "chosen_scores": {"total": chosen, **dict.fromkeys(REWARDS, chosen)},
                "rejected_scores": {"total": rejected, **dict.fromkeys(REWARDS, rejected)}}

    records = [record(0, 0.9, 0.2), record(1, 0.5, 0.49), record(2, 0.1, 0.6), record(3, 0.3, 0.3)]
    kept, m = select_pairs(records, 0.05)
    assert kept["row"] == [0] and m["kept"] == 1 and m["dropped"] == 3
    assert m["chosen_better"] == 2 and m["rejected_better"] == 1
    assert m["gain"]["n"] == 4 and m["chosen_total"]["mean"] == pytest.approx(0.45)
    assert select_pairs(records, 0.0)[0]["row"] == [0, 1, 3]
    none, m0 = select_pairs(records, 2.0)
    assert len(none) == 0 and m0["kept_share"] == 0.0


def test_a_pair_set_saved_by_the_stage_loads_back_even_when_empty(tmp_path):
    from PIL import Image

    scores = {"total": 0.9, **dict.fromkeys(REWARDS, 0.9)}
    records = [{"row": 4, "image": Image.new("RGB", (8, 8)), "chosen": "{}", "rejected": "{}",
                "chosen_scores": scores, "rejected_scores": {**scores, "total": 0.1}}]
    for margin, rows in ((0.5, [4]), (2.0, [])):  # datasets saves a set with no pair without any data file
        kept, _ = select_pairs(records, margin)
        kept.save_to_disk(str(tmp_path / str(margin)))
        loaded = load_pairs(tmp_path / str(margin))
        assert loaded["row"] == rows and {"images", "prompt", "chosen", "rejected"} <= set(loaded.column_names)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_5_vl", "mllama"])
def test_dpo_steps_raise_the_margin_and_save_a_loadable_model(dataset, tmp_path, family):
    _, processor, _ = load_model(SHIPPED / f"{family}-tiny", dtype="float32")
    pairs = gold_pairs(dataset, processor, family)
    cfg = PrefsConfig.from_dict({"method": "dpo", "strategy": "language", "log_every": 1,
                                 "dpo": {"steps": 4, "batch_size": 2, "lr": 5e-3}})
    m = train_preferences(SHIPPED / f"{family}-tiny", family, cfg, tmp_path / "final", pairs=pairs,
                          live_dir=tmp_path / "live")
    log = json.loads((tmp_path / "final" / "train_log.json").read_text())
    assert m["trained"] and m["pairs"] == 6 and len(log) == 4
    assert log[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1: log(2)
    assert log[-1]["loss"] < log[0]["loss"] and log[-1]["rewards/margins"] > log[0]["rewards/margins"]
    # the reward margin through DVCLive (dvc.yaml overlays it with the finetune's loss curves)
    margins = (tmp_path / "live/plots/metrics/rewards/margins.tsv").read_text().splitlines()
    assert margins[0].split("\t")[-1] == "margins" and len(margins) == 1 + len(log)
    assert float(margins[-1].split("\t")[-1]) == pytest.approx(log[-1]["rewards/margins"], rel=1e-4)
    merged, proc, info = load_model(tmp_path / "final" / "merged", dtype="float32")
    assert info["family"] == family and (tmp_path / "final" / "adapter" / "adapter_config.json").exists()


@pytest.mark.slow
def test_grpo_steps_score_completions_with_the_rewards_and_update_the_adapter(dataset, tmp_path):
    cfg = PrefsConfig.from_dict({"method": "grpo", "strategy": "language", "log_every": 1,
                                 "grpo": {"steps": 3, "batch_size": 4, "num_generations": 4, "prompts": 4,
                                          "max_completion_length": 24, "lr": 5e-3}})
    m = train_preferences(SHIPPED / "qwen2_5_vl-tiny", "qwen2_5_vl", cfg, tmp_path / "final",
                          train_split=dataset["train"])
    log = json.loads((tmp_path / "final" / "train_log.json").read_text())
    assert m["trained"] and len(log) == 3
    # TRL's reward is the weighted sum of the reward functions: at most the sum of the weights
    for row in log:
        assert 0.0 <= row["reward"] <= sum(cfg.grpo.weights.values())
        assert {"rewards/json_validity/mean", "rewards/detection_quality/mean"} <= set(row)
    # the update moved the adapter: LoRA B matrices start at zero
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "final" / "adapter" / "adapter_model.safetensors")
    assert any(torch.count_nonzero(v) for k, v in weights.items() if "lora_B" in k)


def test_grpo_on_mllama_is_a_clear_error(dataset, tmp_path):
    cfg = PrefsConfig.from_dict({"method": "grpo"})
    with pytest.raises(NotImplementedError, match="use grpo.method=dpo for Mllama"):
        train_preferences(SHIPPED / "mllama-tiny", "mllama", cfg, tmp_path / "final", train_split=dataset["train"])
    assert not (tmp_path / "final").exists()


def test_no_pairs_keeps_the_finetuned_model_and_says_so(tmp_path):
    empty = Dataset.from_dict({"images": [], "prompt": [], "chosen": [], "rejected": []})
    m = train_preferences(SHIPPED / "qwen2_5_vl-tiny", "qwen2_5_vl", PrefsConfig(), tmp_path / "final", pairs=empty,
                          live_dir=tmp_path / "live")
    assert m["trained"] is False and m["pairs"] == 0
    assert json.loads((tmp_path / "live" / "metrics.json").read_text()) == {"trained": False, "pairs": 0}
    assert (tmp_path / "final" / "merged" / "model.safetensors").read_bytes() == \
        (SHIPPED / "qwen2_5_vl-tiny" / "model.safetensors").read_bytes()


def test_sft_samples_with_retrieved_context_cite_their_tools_passages(dataset, tiny_retriever):
    from safetyvlm.train.sft import FinetuneConfig, sft_dataset

    _, processor, _ = load_model(SHIPPED / "qwen2_5_vl-tiny", dtype="float32")
    split = dataset["train"]
    plain = sft_dataset(split, processor, "qwen2_5_vl")
    assert not any(plain["with_passages"])
    mixed = sft_dataset(split, processor, "qwen2_5_vl", retriever=tiny_retriever, rag_fraction=1.0)
    assert all(mixed["with_passages"])
    for sample, row in zip(mixed, split):
        prompt = sample["messages"][0]["content"][1]["text"]
        assert prompt.startswith("Reference passages follow") and prompt.endswith(INSTRUCTION)
        target = json.loads(sample["messages"][1]["content"][0]["text"])
        ids = [line.split('"')[1] for line in prompt.splitlines() if line.startswith("<passage id=")]
        for tool in target["tools"]:
            # every cited id is in the prompt and belongs to that tool's passages
            assert set(tool["sources"]) <= set(ids)
            assert all(tool["name"].lower().split()[0] in s or s.startswith(tool["name"].lower().replace(" ", "-"))
                       for s in tool["sources"])
        assert sample["length"] > plain[0]["length"]
    half = sft_dataset(split, processor, "qwen2_5_vl", retriever=tiny_retriever, rag_fraction=0.5, seed=1)
    assert 0 < sum(half["with_passages"]) < len(split)
    with pytest.raises(ValueError, match="rag_fraction"):
        FinetuneConfig(rag_fraction=1.5)


def test_sft_detect_replay_asks_names_and_boxes_and_keeps_the_retrieval_rows(dataset, tiny_retriever):
    from safetyvlm.model.prompts import DETECT_INSTRUCTION
    from safetyvlm.train.sft import FinetuneConfig, sft_dataset

    _, processor, _ = load_model(SHIPPED / "qwen2_5_vl-tiny", dtype="float32")
    split = dataset["train"]
    rag = dict(retriever=tiny_retriever, rag_fraction=0.5, seed=1)
    half = sft_dataset(split, processor, "qwen2_5_vl", **rag)
    replay = sft_dataset(split, processor, "qwen2_5_vl", detect_fraction=1.0, **rag)
    assert replay["with_passages"] == half["with_passages"]  # the replay draws from its own stream
    for sample, row, with_passages in zip(replay, split, half["with_passages"]):
        prompt = sample["messages"][0]["content"][1]["text"]
        target = json.loads(sample["messages"][1]["content"][0]["text"])
        if with_passages:
            assert prompt.endswith(INSTRUCTION) and "primary_function" in target["tools"][0]
        else:
            assert prompt == DETECT_INSTRUCTION
            assert [set(t) for t in target["tools"]] == [{"name", "bbox_2d"}] * len(row["instances"])
            assert [t["name"] for t in target["tools"]] == [i["name"] for i in row["instances"]]
    with pytest.raises(ValueError, match="detect_fraction"):
        FinetuneConfig(detect_fraction=-0.1)


def test_sft_retrieval_samples_with_distractors_do_not_give_the_names_away(dataset, tiny_retriever):
    from safetyvlm.train.sft import FinetuneConfig, sft_dataset

    _, processor, _ = load_model(SHIPPED / "qwen2_5_vl-tiny", dtype="float32")
    split = dataset["train"]
    def uncited(samples):  # samples whose prompt carries passages that no tool of the answer cites
        n = 0
        for sample in samples:
            prompt = sample["messages"][0]["content"][1]["text"]
            ids = {line.split('"')[1] for line in prompt.splitlines() if line.startswith("<passage id=")}
            target = json.loads(sample["messages"][1]["content"][0]["text"])
            n += bool(ids - {s for tool in target["tools"] for s in tool["sources"]})
        return n

    own = sft_dataset(split, processor, "qwen2_5_vl", retriever=tiny_retriever, rag_fraction=1.0)
    mixed = sft_dataset(split, processor, "qwen2_5_vl", retriever=tiny_retriever, rag_fraction=1.0,
                        rag_distractors=2)
    for sample, row in zip(mixed, split):
        prompt = sample["messages"][0]["content"][1]["text"]
        target = json.loads(sample["messages"][1]["content"][0]["text"])
        ids = [line.split('"')[1] for line in prompt.splitlines() if line.startswith("<passage id=")]
        for tool in target["tools"]:  # a tool cites only passages of its own category
            assert set(tool["sources"]) <= set(ids)
            assert all(tool["name"].lower().split()[0] in s or s.startswith(tool["name"].lower().replace(" ", "-"))
                       for s in tool["sources"])
    # every prompt now carries passages of tools the image does not show; without distractors few do
    assert uncited(mixed) == len(split) > uncited(own)
    with pytest.raises(ValueError, match="rag_distractors"):
        FinetuneConfig(rag_distractors=-1)
