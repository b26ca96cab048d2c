import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from safetyvlm.parse import normalize_tool_name, parse_report
from safetyvlm.schema import CATEGORIES, SafetyReport, ToolReport, report_json_schema

GOOD = {
    "tools": [
        {
            "name": "Hammer",
            "bbox_2d": [10, 20, 120, 90],
            "primary_function": "Drives nails",
            "required_ppe": ["safety glasses"],
            "primary_hazards": ["struck by", "flying chips", "pinched fingers"],
            "common_misuses": ["striking hardened steel", "loose head"],
        }
    ]
}


def test_there_are_17_categories_spelled_as_the_public_dataset():
    assert len(CATEGORIES) == len(set(CATEGORIES)) == 17
    assert "Needle-nose pliers" in CATEGORIES and "Adjustable spanner" in CATEGORIES


def test_schema_rejects_unknown_name_reversed_box_and_extra_keys():
    with pytest.raises(ValidationError):
        ToolReport(name="Chainsaw", bbox_2d=[0, 0, 1, 1])
    with pytest.raises(ValidationError):
        ToolReport(name="Hammer", bbox_2d=[10, 0, 5, 1])
    with pytest.raises(ValidationError):
        ToolReport(name="Hammer", bbox_2d=[0, 0, 1])
    with pytest.raises(ValidationError):
        SafetyReport.model_validate({"tools": [], "note": "x"})


def test_json_schema_exports_the_17_names_and_box_shape():
    schema = report_json_schema()
    tool = schema["$defs"]["ToolReport"]
    assert sorted(tool["properties"]["name"]["enum"]) == sorted(CATEGORIES)
    assert tool["properties"]["bbox_2d"]["minItems"] == 4 == tool["properties"]["bbox_2d"]["maxItems"]


def test_to_json_round_trips_through_the_parser():
    report = SafetyReport.model_validate(GOOD)
    result = parse_report(report.to_json())
    assert result.valid and result.errors == []
    assert result.report == report
    assert "sources" not in report.to_json(with_sources=False)


def test_valid_answer_is_valid():
    result = parse_report(json.dumps(GOOD), image_size=(200, 200))
    assert result.valid and not result.repaired
    assert result.report.tools[0].bbox_2d == [10, 20, 120, 90]


def test_code_fences_and_chatter_are_stripped_but_make_it_invalid():
    text = "Here you go:\n```json\n" + json.dumps(GOOD) + "\n```\nHope that helps."
    result = parse_report(text)
    assert result.report.tools[0].name == "Hammer"
    assert not result.valid and "text around the JSON ignored" in result.errors
    # a fenced answer with nothing else around it is still valid
    assert parse_report("```json\n" + json.dumps(GOOD) + "\n```").valid


def test_truncated_json_is_repaired_and_keeps_the_complete_tools():
    full = json.dumps({"tools": GOOD["tools"] * 2})
    result = parse_report(full[: len(full) - 40])
    assert result.repaired and not result.valid
    assert result.report.tools[0] == SafetyReport.model_validate(GOOD).tools[0]


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("spanner", "Wrench"),
        ("Spanners", "Wrench"),
        ("adjustable wrench", "Adjustable spanner"),
        ("HAMMERS", "Hammer"),
        ("hammer", "Hammer"),
        ("needle nose pliers", "Needle-nose pliers"),
        ("pipe wrench", "Gas wrench"),
        ("glue gun", "Gun"),
        ("box cutter", "Utility knife"),
        ("measuring tape", "Tape measure"),
        ("caliper", "Calipers"),
        ("side cutters", "Cutting pliers"),
        ("socket wrench", "Ratchet"),
        ("tenon saw", "Backsaw"),
        ("Screwdrivr", "Screwdriver"),
        ("banana", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_near_miss_names_map_onto_categories(raw, expected):
    assert normalize_tool_name(raw) == expected


def test_every_category_maps_to_itself():
    for name in CATEGORIES:
        assert normalize_tool_name(name) == name
        assert normalize_tool_name(name.upper()) == name


def test_names_are_mapped_and_reported():
    text = json.dumps({"tools": [{**GOOD["tools"][0], "name": "claw hammer"}]})
    result = parse_report(text)
    assert result.report.tools[0].name == "Hammer"
    assert not result.valid and any("mapped to 'Hammer'" in e for e in result.errors)


def test_boxes_are_clipped_to_the_image_and_degenerate_ones_dropped():
    tools = [
        {**GOOD["tools"][0], "bbox_2d": [-5, 10, 500, 90]},
        {**GOOD["tools"][0], "bbox_2d": [300, 300, 400, 400]},  # wholly outside 200x200
        {**GOOD["tools"][0], "bbox_2d": [50, 60, 10, 20]},  # reversed corners
    ]
    result = parse_report(json.dumps({"tools": tools}), image_size=(200, 200))
    boxes = [t.bbox_2d for t in result.report.tools]
    assert boxes == [[0, 10, 200, 90], [10, 20, 50, 60]]
    assert any("clipped" in e for e in result.errors)
    assert any("no area" in e for e in result.errors)
    assert any("reversed" in e for e in result.errors)


@pytest.mark.parametrize(
    "text,reason",
    [
        ("I cannot see any tools.", "no JSON"),
        ("", "no JSON"),
        ('{"answer": 3}', "no 'tools'"),
        ('{"tools": "hammer"}', "not a list"),
        ('{"tools": [{"name": "Laser", "bbox_2d": [0,0,1,1]}]}', "unknown tool name"),
        ('{"tools": [{"name": "Hammer"}]}', "missing bbox_2d"),
        ('{"tools": [{"name": "Hammer", "bbox_2d": [0, 0, "a", 1]}]}', "non-numeric"),
        ('{"tools": [{"name": "Hammer", "bbox_2d": [0, 0, 5, 5]}]}', "missing primary_function"),
        ('[{"name": "Hammer", "bbox_2d": [0, 0, 5, 5]}]', "bare list"),
    ],
)
def test_invalid_answers_say_why(text, reason):
    result = parse_report(text)
    assert not result.valid
    assert any(reason in e for e in result.errors), result.errors


def test_unknown_names_are_kept_aside_with_their_boxes_and_reported():
    tools = [GOOD["tools"][0], {"name": "Whatsit", "bbox_2d": [10, 10, 20, 20], "required_ppe": ["gloves"]},
             {"bbox_2d": [30, 30, 40, 40]}, {"name": "Gizmo"}]
    result = parse_report(json.dumps({"tools": tools}), image_size=(200, 200))
    assert [t.name for t in result.report.tools] == [GOOD["tools"][0]["name"]]
    assert [(u["name"], u["bbox_2d"]) for u in result.unknown] == [("Whatsit", [10, 10, 20, 20]),
                                                                   ("None", [30, 30, 40, 40])]
    assert result.unknown[0]["required_ppe"] == ["gloves"]
    assert not result.valid
    assert any("unknown tool name 'Whatsit'" in e and "false positive" in e for e in result.errors)
    assert any("tools[3]: missing bbox_2d; dropped" in e for e in result.errors)  # no box: nothing to score


def name_logprobs(text: str, per_name: list[float]) -> list[tuple[int, int, float]]:
    """Hand-made token log-probabilities for `text`: one sure token (0) per character, except that
    the k-th name written is spelled by two tokens sharing `per_name[k]`."""
    tokens, pos = [], 0
    for m, lp in zip(re.finditer(r'"name": "([^"]*)"', text), per_name):
        start, end = m.span(1)
        tokens += [(i, i + 1, 0.0) for i in range(pos, start)]
        tokens += [(start, (start + end) // 2, lp / 2), ((start + end) // 2, end, lp / 2)]
        pos = end
    return tokens + [(i, i + 1, 0.0) for i in range(pos, len(text))]


def test_each_tool_scores_the_probability_of_its_name_tokens():
    tools = [{**GOOD["tools"][0], "name": "Hammer"}, {"name": "Whatsit", "bbox_2d": [1, 1, 5, 5]},
             {**GOOD["tools"][0], "name": "Hammer", "bbox_2d": [2, 2, 9, 9]}]
    text = "Sure:\n" + json.dumps({"tools": tools})
    result = parse_report(text, token_logprobs=name_logprobs(text, [-0.5, -1.0, -2.0]))
    assert [t.score for t in result.report.tools] == pytest.approx([math.exp(-0.5), math.exp(-2.0)])
    assert result.unknown[0]["score"] == pytest.approx(math.exp(-1.0))
    assert all(t.score is None for t in parse_report(text).report.tools)  # no log-probabilities: no score
    # the score is measured, never taken from the text, and never part of a training target
    written = json.dumps({"tools": [{**GOOD["tools"][0], "score": 0.99}]})
    own = parse_report(written)
    assert own.report.tools[0].score is None and not own.valid
    assert any("unexpected keys" in e and "score" in e for e in own.errors)
    scored = result.report.tools[0]
    assert scored.model_dump()["score"] == pytest.approx(math.exp(-0.5))
    assert "score" not in result.report.to_json() and "score" not in SafetyReport(tools=[
        scored.model_copy(update={"score": None})]).model_dump()["tools"][0]


def test_strings_for_lists_are_split_and_flagged():
    tool = {**GOOD["tools"][0], "primary_hazards": "cuts; burns ;"}
    result = parse_report(json.dumps({"tools": [tool]}))
    assert result.report.tools[0].primary_hazards == ["cuts", "burns"]
    assert not result.valid


def test_non_text_input_is_reported_not_raised():
    for value in (None, 3, b"{}", {"tools": []}):
        result = parse_report(value)
        assert not result.valid


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_parser_never_raises_on_arbitrary_text(text):
    result = parse_report(text, image_size=(64, 48))
    assert isinstance(result.report, SafetyReport)
    for tool in result.report.tools:
        x1, y1, x2, y2 = tool.bbox_2d
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 48


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(
        st.sampled_from(["tools", "name", "bbox_2d", "primary_hazards", "x", "sources"]) | st.text(max_size=5),
        children,
        max_size=5,
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=200))
def test_parser_never_raises_on_json_shaped_text_or_its_truncations(value, cut):
    text = json.dumps(value)
    for candidate in (text, text[: max(0, len(text) - cut)], "```json\n" + text):
        result = parse_report(candidate, image_size=(100, 100))
        assert isinstance(result.report, SafetyReport)
