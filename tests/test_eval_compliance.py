"""JSON validity and schema-completeness rates."""

import json

from safetyvlm.eval.compliance import compliance_rates, tool_complete
from safetyvlm.parse import parse_report

FULL = {"name": "Hammer", "bbox_2d": [0, 0, 10, 10], "primary_function": "Drives nails",
        "required_ppe": ["safety glasses"], "primary_hazards": ["struck fingers"],
        "common_misuses": ["prying"]}


def test_rates_of_hand_made_answers():
    texts = [
        json.dumps({"tools": [FULL]}),  # valid, complete
        json.dumps({"tools": [{**FULL, "primary_hazards": []}]}),  # valid JSON, incomplete tool
        "Sure! " + json.dumps({"tools": [FULL, FULL]}),  # readable but chatter: not valid
        "I see a hammer.",  # no JSON
        None,  # no answer
    ]
    r = compliance_rates(parse_report(t) for t in texts)
    assert r["json_valid"] == 2 / 5
    assert r["json_readable"] == 3 / 5
    assert r["schema_complete"] == 3 / 4  # 4 tools parsed, one lacks hazards
    assert (r["answers"], r["predicted_tools"]) == (5, 4)


def test_completeness_is_undefined_without_tools_and_checks_every_field():
    assert compliance_rates([parse_report('{"tools": []}')])["schema_complete"] is None
    assert compliance_rates([])["json_valid"] == 0.0
    assert tool_complete(FULL)
    for field in ("primary_function", "required_ppe", "primary_hazards", "common_misuses"):
        empty = "  " if field == "primary_function" else [" "]
        assert not tool_complete({**FULL, field: empty}), field
