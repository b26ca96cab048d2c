"""Turn whatever text a model produced into the output contract, deterministically and without raising.

`parse_report` strips code fences and chatter, repairs truncated JSON where it can (json-repair),
maps near-miss tool names onto the 17 categories (a name it cannot map is kept aside in `unknown`,
for the metrics to count), clips boxes to the image, and says *why* a text was not a valid answer.
`valid` is strict: the text (fences aside) was JSON that matched the schema as it stood; anything
the parser had to fix or drop makes it invalid and is listed in `errors`. With the generation's
token log-probabilities, each tool also gets its `score` (the probability of its name's tokens).
No LLM is involved anywhere.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import json_repair
from pydantic import ValidationError

from safetyvlm.schema import CATEGORIES, SAFETY_FIELDS, SAFETY_LISTS, SafetyReport, ToolReport

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 200_000  # longer model output is cut before repair so parsing stays fast

# Foreign or colloquial names for each category. "Spanner" alone is British for a fixed wrench, so it
# maps to Wrench; an adjustable one (adjustable/crescent wrench, shifting spanner) to Adjustable spanner.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "Adjustable spanner": ("adjustable wrench", "crescent wrench", "shifting spanner", "adjustable"),
    "Backsaw": ("back saw", "tenon saw", "dovetail saw", "gent saw"),
    "Calipers": ("caliper", "callipers", "calliper", "vernier caliper", "vernier calipers", "vernier"),
    "Cutting pliers": (
        "diagonal cutters", "diagonal cutter", "side cutters", "side cutter", "wire cutters",
        "wire cutter", "diagonal pliers", "cutters", "nippers", "dikes",
    ),
    "Drill": ("power drill", "cordless drill", "drill driver", "electric drill", "drill press"),
    "Gas wrench": ("pipe wrench", "stillson", "stillson wrench", "gas pliers"),
    "Gun": (
        "glue gun", "hot glue gun", "heat gun", "nail gun", "nailer", "staple gun", "caulking gun",
        "power gun",
    ),
    "Hammer": ("claw hammer", "ball peen hammer", "ball-peen hammer", "framing hammer"),
    "Hand": ("human hand", "worker hand", "worker's hand", "palm"),
    "Handsaw": ("hand saw", "panel saw", "crosscut saw", "rip saw", "saw"),
    "Needle-nose pliers": (
        "needle nose pliers", "needlenose pliers", "long nose pliers", "long-nose pliers",
        "needle-nose", "needle nose",
    ),
    "Pliers": ("combination pliers", "slip joint pliers", "slip-joint pliers", "linesman pliers"),
    "Ratchet": ("socket wrench", "ratchet wrench", "ratchet handle", "socket ratchet"),
    "Screwdriver": ("screw driver", "flathead screwdriver", "phillips screwdriver", "flathead"),
    "Tape measure": ("measuring tape", "tape", "tape rule", "measure tape", "measuring tape measure"),
    "Utility knife": ("box cutter", "stanley knife", "craft knife", "retractable knife", "knife"),
    "Wrench": (
        "spanner", "combination wrench", "combination spanner", "open-end wrench", "open end wrench",
        "ring spanner", "box-end wrench", "box end wrench",
    ),
}


def _key(text: str) -> str:
    text = text.lower().replace("_", " ").replace("’", "'")
    text = re.sub(r"[^a-z0-9' -]+", " ", text)
    return re.sub(r"\s+", " ", text).strip(" -'")


def _plural_forms(key: str) -> set[str]:
    forms = {key}
    if key.endswith("s"):
        forms.add(key[:-1])
    else:
        forms.add(key + "s")
        forms.add(key + "es")
    return forms


def _build_lookup() -> dict[str, str]:
    lookup: dict[str, str] = {}
    for name in CATEGORIES:
        for alias in (name, *SYNONYMS[name]):
            for form in _plural_forms(_key(alias)):
                lookup.setdefault(form, name)
    # Exact category spellings win over any alias collision.
    for name in CATEGORIES:
        lookup[_key(name)] = name
    return lookup


_LOOKUP = _build_lookup()


def normalize_tool_name(text: object) -> str | None:
    """Map a near-miss tool name onto one of the 17 categories; None if nothing is close enough."""
    if not isinstance(text, str):
        return None
    key = _key(text)
    if not key:
        return None
    if key in _LOOKUP:
        return _LOOKUP[key]
    for form in _plural_forms(key):
        if form in _LOOKUP:
            return _LOOKUP[form]
    close = difflib.get_close_matches(key, list(_LOOKUP), n=1, cutoff=0.85)
    return _LOOKUP[close[0]] if close else None


@dataclass
class ParseResult:
    report: SafetyReport
    valid: bool  # strict: parsed and matched the schema with nothing fixed or dropped
    errors: list[str] = field(default_factory=list)
    repaired: bool = False  # the JSON itself had to be repaired (truncation, quotes, commas)
    # Tools with a box whose name is none of the 17, as dicts {name (as written), bbox_2d, safety
    # fields}. The contract has no place for them, but they were predicted: the metrics count them
    # as false positives and hallucinated objects, so naming nonsense never costs less than a wrong tool.
    unknown: list[dict] = field(default_factory=list)
    # The parser's own exception, if it had one: a bug of ours, not a bad answer. The service still
    # answers (invalid); the eval stage stops on it rather than score a crash as a weak model.
    crash: Exception | None = None

    @property
    def json_ok(self) -> bool:
        """The text held a JSON answer we could read, with or without repair."""
        return not any(e.startswith("no JSON") for e in self.errors)


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.DOTALL)


def _strip_fences(text: str) -> tuple[str, bool]:
    """(body, had_chatter): the fenced block if there is one, and whether text stood outside it."""
    m = _FENCE.search(text)
    if not m:
        return text, False
    return m.group(1), bool((text[: m.start()] + text[m.end() :]).strip())


def _extract_json(text: str) -> tuple[object | None, bool, str | None]:
    """(value, repaired, error). Tries strict decoding first, then json-repair on the tail from '{'."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None, False, "no JSON object in the text"
    start = min(starts)
    try:
        value, end = json.JSONDecoder().raw_decode(text, start)
        if text[:start].strip() or text[end:].strip():
            return value, False, "chatter"
        return value, False, None
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        value = json_repair.loads(text[start:])
    except Exception as exc:  # json-repair is best effort; report rather than raise
        return None, True, f"no JSON could be recovered: {type(exc).__name__}"
    if value in ("", None) or value == [] and text[start] == "{":
        return None, True, "no JSON could be recovered"
    return value, True, None


def _as_tool_list(value: object, errors: list[str]) -> list:
    if isinstance(value, dict):
        if "tools" in value:
            tools = value["tools"]
            extra = sorted(k for k in value if k != "tools")
            if extra:
                errors.append(f"unexpected top-level keys ignored: {extra}")
        elif "name" in value:
            errors.append("a single tool object instead of {\"tools\": [...]}")
            tools = [value]
        else:
            errors.append("top-level object has no 'tools' key")
            return []
    elif isinstance(value, list):
        errors.append("a bare list instead of {\"tools\": [...]}")
        tools = value
    else:
        errors.append(f"top-level JSON is a {type(value).__name__}, not an object")
        return []
    if not isinstance(tools, list):
        errors.append("'tools' is not a list")
        return []
    return tools


def _as_number(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _as_box(raw: object, image_size: tuple[int, int] | None, where: str, errors: list[str]):
    if isinstance(raw, dict):
        raw = [raw.get(k) for k in ("x1", "y1", "x2", "y2")]
    if not isinstance(raw, (list, tuple)) or len(raw) != 4:
        errors.append(f"{where}: bbox_2d is not a list of 4 numbers")
        return None
    nums = [_as_number(v) for v in raw]
    if any(n is None for n in nums):
        errors.append(f"{where}: bbox_2d has a non-numeric value")
        return None
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in raw):
        errors.append(f"{where}: bbox_2d numbers given as strings")
    x1, y1, x2, y2 = nums
    if x2 < x1 or y2 < y1:
        errors.append(f"{where}: bbox_2d corners reversed; reordered")
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
    w, h = image_size if image_size else (math.inf, math.inf)
    cx1, cy1 = min(max(x1, 0.0), w), min(max(y1, 0.0), h)
    cx2, cy2 = min(max(x2, 0.0), w), min(max(y2, 0.0), h)
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        errors.append(f"{where}: bbox_2d outside the image; clipped")
    if cx2 <= cx1 or cy2 <= cy1:
        errors.append(f"{where}: bbox_2d has no area inside the image; tool dropped")
        return None
    return [cx1, cy1, cx2, cy2]


def _as_text(v: object) -> str:
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, list):
        return "; ".join(_as_text(x) for x in v if _as_text(x))
    return "" if v is None else str(v)


def _as_text_list(v: object, where: str, errors: list[str]) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        errors.append(f"{where}: a string where a list was expected; split on ';'")
        return [p.strip() for p in re.split(r"[;\n]", v) if p.strip()]
    if isinstance(v, list):
        return [t for t in (_as_text(x) for x in v) if t]
    errors.append(f"{where}: not a list")
    return []


_LIST_FIELDS = (*SAFETY_LISTS, "sources")
_KNOWN_FIELDS = {"name", "bbox_2d", "primary_function", *_LIST_FIELDS}


def _name_scores(text: str, raw_tools: list, token_logprobs) -> list[float | None]:
    """Per raw tool, the model's probability of the tokens that spell its name: exp of the sum of
    their log-probabilities (the class-token likelihood Pix2Seq ranks its boxes by). Each name is
    looked up in `text` as JSON writes it, after the previous tool's; None where it cannot be found."""
    scores, cursor = [], 0
    for raw in raw_tools:
        name = raw.get("name") if isinstance(raw, dict) else None
        span = None
        if isinstance(name, str) and name:
            for written in dict.fromkeys((json.dumps(name, ensure_ascii=False), json.dumps(name))):
                m = re.compile(r'"name"\s*:\s*' + re.escape(written)).search(text, cursor)
                if m:
                    span, cursor = (m.end() - len(written) + 1, m.end() - 1), m.end()
                    break
        logprobs = [lp for start, end, lp in token_logprobs if span and start < span[1] and end > span[0]]
        scores.append(min(1.0, math.exp(sum(logprobs))) if logprobs else None)
    return scores


def _as_tool(raw: object, i: int, image_size, errors: list[str], unknown: list[dict],
             score: float | None = None) -> ToolReport | None:
    """The tool as a ToolReport; None when dropped, or when its name is none of the 17 (then it goes
    to `unknown` if it has a usable box)."""
    where = f"tools[{i}]"
    if not isinstance(raw, dict):
        errors.append(f"{where}: not an object; dropped")
        return None
    raw_name = raw.get("name")
    name = normalize_tool_name(raw_name)
    if name is None:
        errors.append(f"{where}: unknown tool name {str(raw_name)[:60]!r}; not in the report, "
                      "scored as a false positive")
    elif name != raw_name:
        errors.append(f"{where}: name {str(raw_name)[:60]!r} mapped to {name!r}")
    if "bbox_2d" not in raw:
        errors.append(f"{where}: missing bbox_2d; dropped")
        return None
    box = _as_box(raw["bbox_2d"], image_size, where, errors)
    if box is None:
        return None
    extra = sorted(k for k in raw if k not in _KNOWN_FIELDS)
    if extra:
        errors.append(f"{where}: unexpected keys ignored: {[str(k)[:40] for k in extra]}")
    for key in SAFETY_FIELDS:
        if key not in raw:
            errors.append(f"{where}: missing {key}")
    pf = raw.get("primary_function")
    if pf is not None and not isinstance(pf, str):
        errors.append(f"{where}: primary_function is not a string")
    fields = {k: _as_text_list(raw.get(k), f"{where}.{k}", errors) for k in _LIST_FIELDS}
    if name is None:
        unknown.append({"name": str(raw_name)[:60], "bbox_2d": box, "primary_function": _as_text(pf), **fields,
                        "score": score})
        return None
    return ToolReport(name=name, bbox_2d=box, primary_function=_as_text(pf), **fields, score=score)


def parse_report(text: object, image_size: tuple[int, int] | None = None,
                 token_logprobs: Sequence[tuple[int, int, float]] | None = None) -> ParseResult:
    """Parse model text into a SafetyReport. Never raises; `errors` says what was wrong or fixed.

    `image_size` is (width, height) of the frame the boxes are in; boxes are clipped to it.
    `token_logprobs`: (start, end, log-probability) of each generated token in `text`
    (`model.generate.generate_scored`); with them every tool gets a `score`, else it stays None.
    """
    errors: list[str] = []
    try:
        if not isinstance(text, str):
            errors.append(f"input is a {type(text).__name__}, not text")
            text = "" if text is None else str(text)
        if len(text) > MAX_TEXT_CHARS:
            errors.append(f"text longer than {MAX_TEXT_CHARS} characters; cut")
            text = text[:MAX_TEXT_CHARS]
        body, chatter = _strip_fences(text)
        value, repaired, err = _extract_json(body)
        if err == "chatter":
            chatter, err = True, None
        if err:
            return ParseResult(SafetyReport(), False, [*errors, err], repaired)
        if chatter:
            errors.append("text around the JSON ignored")
        if repaired:
            errors.append("JSON was malformed or truncated; repaired")
        tools, unknown = [], []
        raw_tools = _as_tool_list(value, errors)
        scores = _name_scores(text, raw_tools, token_logprobs) if token_logprobs else [None] * len(raw_tools)
        for i, (raw, score) in enumerate(zip(raw_tools, scores)):
            tool = _as_tool(raw, i, image_size, errors, unknown, score)
            if tool is not None:
                tools.append(tool)
        report = SafetyReport(tools=tools)
        if not errors:
            # Final strict check against the schema itself, so `valid` means exactly that.
            try:
                SafetyReport.model_validate(value)
            except ValidationError as exc:
                errors.append(f"does not match the schema: {str(exc).splitlines()[0][:200]}")
        return ParseResult(report, not errors, errors, repaired, unknown)
    except Exception as exc:  # the contract is "never raises": report anything unforeseen, marked as ours
        log.exception("parse_report crashed on %r", text[:200] if isinstance(text, str) else text)
        errors.append(f"could not parse: {type(exc).__name__}: {str(exc)[:200]}")
        return ParseResult(SafetyReport(), False, errors, False, crash=exc)


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def error_reason(message: str) -> str:
    """The kind of a parser error, without the tool's index, quoted text or numbers, so invalid
    answers can be counted by reason: "tools[2]: name 'spanners' mapped to 'Wrench'" -> "tool: name …
    mapped to …"."""
    reason = re.sub(r"^tools\[\d+\]", "tool", message)
    reason = _QUOTED.sub("…", reason)
    reason = re.sub(r"\[[^\]]*\]", "[…]", reason)
    return re.sub(r"\d+", "N", reason)[:120]
