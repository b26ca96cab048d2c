"""Judges: the deterministic local one on known answers; the OpenAI-compatible one against a real
chat-completions server on 127.0.0.1 (good, malformed, out-of-range, 5xx/429-then-success,
permanent failures), with caching and exclusion of failed judgments."""

import json
import re
import threading
from collections import Counter
from http.server import ThreadingHTTPServer

import pytest
from json_http import JSONHandler

from safetyvlm.eval.judge import (
    DIMENSIONS,
    JudgeCase,
    Judgment,
    LocalJudge,
    OpenAIJudge,
    cache_key,
    instruction_followed,
    judge_messages,
    run_judge,
)
from safetyvlm.kb import load_kb
from safetyvlm.parse import parse_report
from safetyvlm.schema import SAFETY_FIELDS

KB = load_kb()
HAMMER_BOX = [10.0, 10.0, 60.0, 60.0]
DRILL_BOX = [100.0, 20.0, 180.0, 90.0]


def kb_tool(name, box):
    return {"name": name, "bbox_2d": box, **KB.safety_fields(name)}


def case(answer: dict | str | None, truths):
    text = answer if isinstance(answer, str) or answer is None else json.dumps(answer)
    parsed = parse_report(text)
    predicted = [{"name": t.name, "bbox_2d": t.bbox_2d, **{f: getattr(t, f) for f in SAFETY_FIELDS}}
                 for t in parsed.report.tools]
    return JudgeCase(text=text or "", parsed=parsed, predicted=predicted, truths=truths,
                     reference={t["name"]: KB.safety_fields(t["name"]) for t in truths},
                     image_size=(200, 100))


TRUTH = [{"name": "Hammer", "bbox_2d": HAMMER_BOX}, {"name": "Drill", "bbox_2d": DRILL_BOX}]
PERFECT = {"tools": [kb_tool("Hammer", HAMMER_BOX), kb_tool("Drill", DRILL_BOX)]}


# ----------------------------------------------------------------------------------- local judge

def test_local_judge_gives_a_perfect_answer_ten_everywhere():
    j = LocalJudge().judge(case(PERFECT, TRUTH))
    assert [getattr(j, d) for d in DIMENSIONS] == [10.0] * 5 and j.overall == 10.0


def test_local_judge_scores_empty_and_unparsable_answers():
    empty = LocalJudge().judge(case({"tools": []}, TRUTH))
    assert [getattr(empty, d) for d in DIMENSIONS] == [0.0] * 5
    junk = LocalJudge().judge(case("I think there is a hammer.", TRUTH))
    assert junk.overall == 0.0
    nothing = LocalJudge().judge(case({"tools": []}, []))  # nothing there, nothing claimed
    assert nothing.overall == 10.0


def test_an_answer_with_no_tools_earns_nothing_for_structure_when_the_image_has_tools():
    # readable JSON whose tools were all dropped (names outside the 17) used to get structured_output 5
    dropped = case({"tools": [{"name": "Whatsit", "bbox_2d": HAMMER_BOX}]}, TRUTH)
    assert dropped.parsed.json_ok and not dropped.parsed.report.tools
    j = LocalJudge().judge(dropped)
    assert j.structured_output == 0.0 and j.overall == 0.0
    assert LocalJudge().judge(case({"tools": []}, TRUTH)).structured_output == 0.0  # valid, but says nothing
    assert LocalJudge().judge(case({"tools": []}, [])).structured_output == 10.0  # right: nothing there


def test_local_judge_halves_content_for_a_missed_tool_and_costs_an_invented_one():
    one = LocalJudge().judge(case({"tools": [kb_tool("Hammer", HAMMER_BOX)]}, TRUTH))
    assert one.tool_identification == pytest.approx(10 * (2 / 3))  # det F1 = name F1 = 2/3
    assert (one.primary_function, one.safety_considerations, one.common_misuses) == (5.0, 5.0, 5.0)
    extra = {"tools": [*PERFECT["tools"], kb_tool("Gun", [0, 0, 5, 5])]}
    j = LocalJudge().judge(case(extra, TRUTH))
    assert j.primary_function == pytest.approx(10 * 2 / 3)
    assert j.structured_output == 10.0


def test_local_judge_pairs_by_name_when_the_box_is_off_and_checks_items():
    moved = kb_tool("Hammer", [150.0, 50.0, 190.0, 95.0])
    moved["primary_hazards"] = moved["primary_hazards"][:2] + ["radiation burns"]
    j = LocalJudge().judge(case({"tools": [moved]}, TRUTH[:1]))
    assert j.tool_identification == 5.0  # right name (F1 1), wrong box (F1 0)
    assert j.primary_function == 10.0
    n_ref = len(KB.safety_fields("Hammer")["primary_hazards"])
    hazards_f1 = 2 * 2 / (3 + n_ref)
    assert j.safety_considerations == pytest.approx(10 * (1 + hazards_f1) / 2)


def test_local_judge_structured_output_counts_validity_and_completeness():
    partial = kb_tool("Hammer", HAMMER_BOX)
    partial["common_misuses"] = []
    j = LocalJudge().judge(case({"tools": [partial]}, TRUTH[:1]))
    assert j.structured_output == 5.0  # valid JSON, no tool complete
    chatter = LocalJudge().judge(case("Here you go: " + json.dumps(PERFECT), TRUTH))
    assert chatter.structured_output == 5.0  # readable and complete, not strictly valid


def test_instruction_accuracy_needs_valid_complete_and_exact_names():
    assert instruction_followed(parse_report(json.dumps(PERFECT)), TRUTH)
    moved = {"tools": [kb_tool("Hammer", [0, 0, 1, 1]), kb_tool("Drill", [0, 0, 1, 1])]}
    assert instruction_followed(parse_report(json.dumps(moved)), TRUTH)  # boxes do not enter it
    assert not instruction_followed(parse_report(json.dumps({"tools": PERFECT["tools"][:1]})), TRUTH)
    assert not instruction_followed(parse_report("ok " + json.dumps(PERFECT)), TRUTH)
    incomplete = {"tools": [{**PERFECT["tools"][0], "required_ppe": []}, PERFECT["tools"][1]]}
    assert not instruction_followed(parse_report(json.dumps(incomplete)), TRUTH)
    two = {"tools": [PERFECT["tools"][0], PERFECT["tools"][0]]}
    assert not instruction_followed(parse_report(json.dumps(two)), TRUTH[:1])
    assert instruction_followed(parse_report('{"tools": []}'), [])


def test_local_judge_with_embeddings_credits_paraphrases(request):
    from safetyvlm.eval.hallucination import ClaimChecker, load_embedder

    checker = ClaimChecker(KB, load_embedder(),
                           cache_dir=request.config.cache.mkdir("safetyvlm-kb-embeddings"))
    para = {"name": "Hammer", "bbox_2d": HAMMER_BOX,
            "primary_function": "Drives nails in and pulls them out",
            "required_ppe": ["eye protection", "gloves"],
            "primary_hazards": ["hitting your own thumb", "the head flying off"],
            "common_misuses": ["prying with the handle"]}
    c = case({"tools": [para]}, TRUTH[:1])
    lexical, semantic = LocalJudge().judge(c), LocalJudge(claims=checker).judge(c)
    assert semantic.safety_considerations > lexical.safety_considerations
    assert semantic.primary_function >= lexical.primary_function
    assert semantic.primary_function > 5


# ------------------------------------------------------------------------- OpenAI-compatible judge

GOOD_SCORES = {"tool_identification": 8, "primary_function": 7, "safety_considerations": 6,
               "common_misuses": 5, "structured_output": 9, "rationale": "fine"}


class ChatServer:
    """A chat-completions endpoint whose behaviour is chosen by a CASE=<name> marker in the prompt."""

    def __init__(self):
        self.requests = Counter()
        self.bodies = []
        self.auth = set()
        server = self

        class Handler(JSONHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                server.auth.add(self.headers.get("Authorization"))
                name = re.search(r"CASE=(\w+)", body["messages"][-1]["content"]).group(1)
                server.requests[name] += 1
                status, content = server.behaviour(name, server.requests[name])
                if status != 200:
                    return self._send(status, {"error": {"message": f"{name} says {status}",
                                                         "type": "server_error"}})
                self._send(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @staticmethod
    def behaviour(name, n):
        good = json.dumps(GOOD_SCORES)
        return {
            "good": (200, good),
            "malformed": (200, '{"tool_identification": 8, "primary_function": '),
            "range": (200, json.dumps({**GOOD_SCORES, "safety_considerations": 14})),
            "missing": (200, json.dumps({"tool_identification": 8})),
            "flaky": (500, "") if n == 1 else (200, good),
            "limited": (429, "") if n <= 2 else (200, good),
            "down": (503, ""),
            "rejected": (400, ""),
        }[name]


@pytest.fixture
def chat_server():
    srv = ChatServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


NAMES = ["good", "malformed", "range", "missing", "flaky", "limited", "down", "rejected"]


def marked_cases():
    return [case(f"CASE={n} " + json.dumps(PERFECT), TRUTH) for n in NAMES]


def make_judge(url, cache, **kw):
    return OpenAIJudge(model="judge-model", base_url=url, cache_dir=cache, max_attempts=3,
                       wait_base=0.01, wait_max=0.05, timeout=5, **kw)


def test_openai_judge_against_a_local_server(chat_server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    judge = make_judge(chat_server.url, tmp_path)
    summary = run_judge(judge, marked_cases())

    # retries: 5xx once then ok; 429 twice then ok; 503 three times (max_attempts); 400 never retried
    assert chat_server.requests == Counter(good=1, malformed=1, range=1, missing=1, flaky=2,
                                           limited=3, down=3, rejected=1)
    assert judge.stats["requests"] == 13
    assert judge.stats["failures"] == Counter(malformed_json=1, invalid_scores=2, api_error=2)
    # failed judgments are counted and excluded, never averaged in as 0
    assert (summary["judged"], summary["failed"]) == (3, 5)
    for d in DIMENSIONS:
        assert summary[d] == GOOD_SCORES[d]
    assert summary["overall"] == pytest.approx(7.0)
    assert summary["instruction_accuracy"] == 0.0  # every answer has the CASE= chatter
    assert [p is not None for p in summary["per_answer"]] == [n in ("good", "flaky", "limited")
                                                            for n in NAMES]
    # protocol: temperature 0, JSON mode, the model asked for, the key from the environment
    body = chat_server.bodies[0]
    assert body["temperature"] == 0 and body["response_format"] == {"type": "json_object"}
    assert body["model"] == "judge-model" and chat_server.auth == {"Bearer sk-test-123"}
    assert "REFERENCE" in body["messages"][-1]["content"]
    assert "Hammer" in body["messages"][-1]["content"]

    # a rerun reads every answered prompt from the disk cache; only transport failures go out again
    chat_server.requests.clear()
    again = make_judge(chat_server.url, tmp_path)
    summary2 = run_judge(again, marked_cases())
    assert chat_server.requests == Counter(down=3, rejected=1)
    assert again.stats["cache_hits"] == 6
    assert {k: summary2[k] for k in (*DIMENSIONS, "judged", "failed")} == {
        k: summary[k] for k in (*DIMENSIONS, "judged", "failed")}

    chat_server.requests.clear()
    third = make_judge(chat_server.url, tmp_path)
    run_judge(third, [c for c, n in zip(marked_cases(), NAMES) if n in ("good", "flaky", "range")])
    assert sum(chat_server.requests.values()) == 0 and third.stats["requests"] == 0


def test_openai_judge_cache_key_is_sha256_of_model_and_prompt(chat_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "k")
    c = marked_cases()[0]
    judge = make_judge(chat_server.url, tmp_path, api_key_env="MY_JUDGE_KEY")
    assert judge.judge(c) == Judgment(**GOOD_SCORES)
    key = cache_key("judge-model", judge_messages(c))
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.json"]
    assert cache_key("other-model", judge_messages(c)) != key


def test_openai_judge_needs_a_key_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        OpenAIJudge(model="m", base_url="http://127.0.0.1:9/v1", cache_dir=tmp_path)


def test_openai_judge_connection_refused_is_retried_then_counted(monkeypatch, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    judge = make_judge(f"http://127.0.0.1:{port}/v1", tmp_path)
    assert judge.judge(marked_cases()[0]) is None
    assert judge.stats["requests"] == 3 and judge.stats["failures"] == Counter(api_error=1)
