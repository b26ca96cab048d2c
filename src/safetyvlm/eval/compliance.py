"""Structured-output compliance: is the answer valid JSON of the contract, and are its fields filled?

* **JSON validity rate** = answers with `parse_report(text).valid` / all answers. `valid` is strict:
  anything the parser had to repair, map or drop makes the answer invalid (see `safetyvlm.parse`).
* **JSON readable rate** = answers from which a JSON answer could be read at all (`json_ok`,
  repaired or not); the gap to the validity rate is how much the parser had to fix.
* **Schema-completeness rate** = predicted tools with all four safety fields
  (`schema.SAFETY_FIELDS`) non-empty / all predicted tools (over the parsed, kept tools). None when
  no tool was predicted at all: there is nothing to be complete or incomplete.
* **Invalid answers by reason** (`invalid_answers`): the count of answers that are not strictly valid,
  and per kind of parser error how many answers have it, so a weak model's failures can be told apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from safetyvlm.parse import ParseResult, error_reason
from safetyvlm.schema import SAFETY_FIELDS, ToolReport


def tool_complete(tool: ToolReport | dict) -> bool:
    get = tool.get if isinstance(tool, dict) else lambda k: getattr(tool, k)
    for f in SAFETY_FIELDS:
        v = get(f)
        if f == "primary_function":
            if not str(v or "").strip():
                return False
        elif not [x for x in (v or []) if str(x).strip()]:
            return False
    return True


def answer_complete(parsed: ParseResult) -> bool:
    """Every tool of the answer has all four safety fields (an empty tool list is complete)."""
    return all(tool_complete(t) for t in parsed.report.tools)


def invalid_answers(parsed: Iterable[ParseResult]) -> dict:
    """How many answers are not strictly valid, and how many carry each reason (`parse.error_reason`;
    an answer counts once per reason, so the reasons can add up to more than `answers`)."""
    counts: Counter = Counter()
    invalid = 0
    for p in parsed:
        if not p.valid:
            invalid += 1
            counts.update({error_reason(e) for e in p.errors})
    return {"answers": invalid, "by_reason": dict(counts.most_common())}


def compliance_rates(parsed: Iterable[ParseResult]) -> dict:
    parsed = list(parsed)
    n = len(parsed)
    tools = [t for p in parsed for t in p.report.tools]
    complete = sum(tool_complete(t) for t in tools)
    return {
        "json_valid": sum(p.valid for p in parsed) / n if n else 0.0,
        "json_readable": sum(p.json_ok for p in parsed) / n if n else 0.0,
        "schema_complete": complete / len(tools) if tools else None,
        "answers": n,
        "predicted_tools": len(tools),
    }
