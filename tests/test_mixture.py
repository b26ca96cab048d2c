"""The base pretraining mixture: generic safety text from the corpus, never the knowledge base's entries;
two families trained on the same rendered scenes."""

import json
from pathlib import Path

import numpy as np
import pytest

from safetyvlm.data.mixture import generic_report_text, prose_documents, safety_phrases, scene_passages
from safetyvlm.kb import load_kb
from safetyvlm.parse import SYNONYMS, parse_report
from safetyvlm.schema import CATEGORIES, SafetyReport

ROOT = Path(__file__).resolve().parents[1]


def _kb_phrases():
    kb = load_kb()
    return {p.lower() for n in kb.tools for v in kb.safety_fields(n).values()
            for p in (v if isinstance(v, list) else [v])}


def test_every_category_has_phrases_and_none_is_a_knowledge_base_entry():
    phrases = safety_phrases()
    assert set(phrases) == set(CATEGORIES)
    kb = _kb_phrases()
    for name, p in phrases.items():
        assert p.functions and p.ppe and p.hazards and p.misuses, name
        for pool in (p.functions, p.ppe, p.hazards, p.misuses):
            assert not {x.lower() for x in pool} & kb, name


def test_a_generic_report_is_strictly_valid_contract_json_with_corpus_text_not_the_kbs():
    phrases = safety_phrases()
    tools = [{"name": "Hammer", "bbox_2d": [10, 20, 60, 90]}, {"name": "Drill", "bbox_2d": [70, 5, 200, 100]}]
    text = generic_report_text(tools, phrases, np.random.default_rng(0))
    result = parse_report(text, image_size=(224, 224))
    assert result.valid, result.errors
    report = SafetyReport.model_validate(json.loads(text))
    assert [t.name for t in report.tools] == ["Hammer", "Drill"]
    kb = load_kb()
    for tool in report.tools:
        assert tool.primary_function in phrases[tool.name].functions
        assert set(tool.primary_hazards) <= set(phrases[tool.name].hazards)
        assert tool.primary_function != kb.safety_fields(tool.name)["primary_function"]
    # seeded: the same rng gives the same answer, another gives another
    assert text == generic_report_text(tools, phrases, np.random.default_rng(0))
    assert text != generic_report_text(tools, phrases, np.random.default_rng(1))


def test_scene_passages_are_the_scenes_own_categories_at_times_with_one_other():
    kb = load_kb()
    corpus = {p.id: p for p in kb.corpus}
    swapped = orders = 0
    for seed in range(40):
        names = [["Hammer"], ["Hammer", "Drill", "Hammer"], ["Pliers", "Handsaw", "Drill"]][seed % 3]
        ps = scene_passages(names, kb, np.random.default_rng(seed))
        assert len(ps) == 3 and len({p["id"] for p in ps}) == 3
        for p in ps:  # the corpus's own passages, whole, category kept for the answer's sources
            assert p["category"] == corpus[p["id"]].category and p["text"] == " ".join(corpus[p["id"]].text.split())
        others = [p for p in ps if p["category"] not in names]
        assert len(others) <= 1
        swapped += len(others)
        if len(set(names)) == 2:  # both tools' categories always there, one passage each at least
            assert {p["category"] for p in ps} >= {"Hammer", "Drill"}
        orders += ps[0]["category"] != names[0]
        assert ps == scene_passages(names, kb, np.random.default_rng(seed))  # seeded
    assert 8 <= swapped <= 32  # about half the prompts carry one passage of another category
    assert orders >= 8  # shuffled: the first tool's passage does not always come first


def test_a_report_with_passages_cites_its_own_categorys_passages_only():
    kb = load_kb()
    phrases = safety_phrases(kb)
    tools = [{"name": "Hammer", "bbox_2d": [10, 20, 60, 90]}, {"name": "Drill", "bbox_2d": [70, 5, 200, 100]}]
    for seed in range(10):
        rng = np.random.default_rng(seed)
        ps = scene_passages(["Hammer", "Drill"], kb, rng)
        text = generic_report_text(tools, phrases, rng, ps)
        assert parse_report(text, image_size=(224, 224)).valid
        report = SafetyReport.model_validate(json.loads(text))
        for tool in report.tools:
            assert tool.sources == [p["id"] for p in ps if p["category"] == tool.name] != []
    # without passages there is no sources key at all (the plain prompt's contract)
    assert "sources" not in generic_report_text(tools, phrases, np.random.default_rng(0))


def test_prose_carries_the_corpus_and_every_synonym_but_no_kb_entry():
    docs = prose_documents()
    joined = "\n".join(docs)
    kb = load_kb()
    assert all(" ".join(p.text.split()) in joined for p in kb.corpus)
    assert all(f"A {alias} is a kind of {name}." in joined for name in CATEGORIES for alias in SYNONYMS[name])
    # a knowledge-base hazard phrase never appears as such unless the corpus itself says it
    corpus = " ".join(" ".join(p.text.split()).lower() for p in kb.corpus)
    leaked = [h for n in kb.tools for h in kb.safety_fields(n)["primary_hazards"]
              if h.lower() in joined.lower() and h.lower() not in corpus]
    assert leaked == []


@pytest.mark.slow
def test_two_families_train_on_the_same_scenes_with_both_prompts():
    from safetyvlm.model.boxes import model_frame
    from safetyvlm.model.presets import build_preset_parts
    from safetyvlm.train.pretrain import rendered_batches, vision_grid

    parts = {}
    for family in ("qwen2_5_vl", "mllama"):
        model, proc, _ = build_preset_parts(family, "tiny")
        parts[family] = (proc, model_frame(family, proc), vision_grid(family, proc, (224, 224)), model.config)
    data = rendered_batches(parts, {"width": 224, "height": 224}, seed=3, batch_size=2, report_fraction=0.5)
    tasks = set()
    for b in range(6):
        batch = data.batch(b)
        assert set(batch) == set(parts)
        texts = {}
        for family, enc in batch.items():
            proc = parts[family][0]
            labels = enc["labels"][0]
            answer = proc.tokenizer.decode(enc["input_ids"][0][labels != -100], skip_special_tokens=True)
            texts[family] = json.loads(answer)
            assert enc["aux_cover"].shape[0] == 2
        # same scene, same tools and the same safety text for both families (boxes in each one's frame)
        q, m = texts["qwen2_5_vl"]["tools"], texts["mllama"]["tools"]
        assert [t["name"] for t in q] == [t["name"] for t in m]
        assert [{k: v for k, v in t.items() if k != "bbox_2d"} for t in q] == \
               [{k: v for k, v in t.items() if k != "bbox_2d"} for t in m]
        tasks.add("report" if "primary_function" in q[0] else "detect")
        # Qwen batches carry the rope and window tables its forward would otherwise rebuild per image
        assert batch["qwen2_5_vl"]["position_ids"].shape[:2] == (3, 2)
        assert "position_ids" not in batch["mllama"]
    assert tasks == {"report", "detect"}
    assert data.batch(4)["qwen2_5_vl"]["input_ids"].equal(data.batch(4)["qwen2_5_vl"]["input_ids"])


@pytest.mark.slow
def test_the_pretrain_command_continues_a_base_and_logs_its_curves_through_dvclive(tmp_path):
    """The command that made the shipped bases, for 3 steps on the CPU: continued from the shipped base
    (init_from), saved with its record, and the loss curve in DVCLive's layout under OUT/live/<family>."""
    import json

    from safetyvlm.train.pretrain import main

    main(["--families", "qwen2_5_vl", "--out", str(tmp_path), "--set", "minutes=5", "max_steps=3",
          "batch_size=2", "workers=0", "log_every=1", "eval_images=2", "eval_batch_size=2", "report_tokens=16",
          "max_new_tokens=16", "text_every=1", "text_batch_size=2", "report_fraction=0.5",
          f"init_from={ROOT}/models/shipped/{{family}}-tiny"])
    record = json.loads((tmp_path / "qwen2_5_vl-tiny" / "base_record.json").read_text())
    assert record["steps"] == 3 and record["continued_from"]["family"] == "qwen2_5_vl"
    curve = (tmp_path / "live/qwen2_5_vl/plots/metrics/train/loss.tsv").read_text().splitlines()
    log = json.loads((tmp_path / "qwen2_5_vl-tiny" / "train_log.json").read_text())
    assert curve[0].split("\t") == ["step", "loss"]
    assert [int(r.split("\t")[0]) for r in curve[1:]] == [h["step"] for h in log if "loss" in h] == [1, 2, 3]
    assert (tmp_path / "live/qwen2_5_vl/plots/metrics/train/text_loss.tsv").exists()


@pytest.mark.slow
def test_data_echoing_trains_each_rendered_batch_several_steps(tmp_path):
    """echo=2: four steps from two rendered batches; the record tells the fresh scenes from the samples."""
    import json

    from safetyvlm.train.pretrain import main

    main(["--families", "mllama", "--out", str(tmp_path), "--no-live", "--set", "minutes=5", "max_steps=4",
          "echo=2", "batch_size=2", "workers=0", "log_every=1", "eval_images=1", "eval_batch_size=1",
          "report_tokens=8", "max_new_tokens=8", "text_every=0", "report_fraction=0",
          f"init_from={ROOT}/models/shipped/{{family}}-tiny"])
    record = json.loads((tmp_path / "mllama-tiny" / "base_record.json").read_text())
    assert record["steps"] == 4 and record["samples"] == 8 and record["scenes"] == 4
    log = [h for h in json.loads((tmp_path / "mllama-tiny" / "train_log.json").read_text()) if "loss" in h]
    # the echo of a batch comes after a step on it: its loss is lower than the first look at it
    assert log[1]["loss"] < log[0]["loss"] and log[3]["loss"] < log[2]["loss"]


@pytest.mark.slow
def test_report_batches_with_passages_carry_them_in_the_prompt_and_the_base_is_scored_with_them(tmp_path):
    """report_passages=1: a report batch's prompt holds the scene's passages and each answer's tool cites
    some of them; the pretrain record then also scores the base with passages in its prompt."""
    import re

    from safetyvlm.model.boxes import model_frame
    from safetyvlm.model.presets import build_preset_parts
    from safetyvlm.train.pretrain import main, rendered_batches, vision_grid

    model, proc, _ = build_preset_parts("mllama", "tiny")
    parts = {"mllama": (proc, model_frame("mllama", proc), vision_grid("mllama", proc, (224, 224)), model.config)}
    render = {"width": 224, "height": 224}
    enc = rendered_batches(parts, render, seed=3, batch_size=2, report_fraction=1.0, report_passages=1.0).batch(0)
    enc = enc["mllama"]
    for ids, labels in zip(enc["input_ids"], enc["labels"]):
        prompt = proc.tokenizer.decode(ids[labels == -100], skip_special_tokens=True)
        answer = json.loads(proc.tokenizer.decode(ids[labels != -100], skip_special_tokens=True))
        shown = re.findall(r'<passage id="([^"]+)">', prompt)
        assert len(shown) == 3
        assert all(t["sources"] and set(t["sources"]) <= set(shown) for t in answer["tools"])
    plain = rendered_batches(parts, render, seed=3, batch_size=2, report_fraction=1.0).batch(0)["mllama"]
    assert "<passage" not in proc.tokenizer.decode(plain["input_ids"][0])

    main(["--families", "mllama", "--out", str(tmp_path), "--no-live", "--set", "minutes=5", "max_steps=1",
          "batch_size=2", "workers=0", "eval_images=2", "eval_batch_size=2", "report_tokens=8",
          "max_new_tokens=8", "text_every=0", "report_fraction=1", "report_passages=1",
          f"init_from={ROOT}/models/shipped/{{family}}-tiny"])
    record = json.loads((tmp_path / "mllama-tiny" / "base_record.json").read_text())
    assert record["eval_passages"]["images"] == 2 and "sources_cited" in record["eval_passages"]
    shipped = json.loads((ROOT / "models/shipped/mllama-tiny/base_record.json").read_text())
    assert record["continued_from"]["total_samples"] == shipped["total_samples"]  # its provenance kept
