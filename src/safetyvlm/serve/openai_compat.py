"""The OpenAI chat-completions dialect: request -> (image bytes, options), answer -> `chat.completion`.

So an existing OpenAI client (`client.chat.completions.create(model=..., messages=[...])`) can call
the model: the image travels as an `image_url` part with a `data:` URI (base64). Remote `http(s)` URLs
are refused on purpose: the service never fetches what a request points at (no SSRF). The model has
one task, so text parts are accepted but do not change the instruction; the answer's `content` is the
output contract's JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid

from safetyvlm.serve.images import BadInput

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)


def _bad(message: str) -> BadInput:
    return BadInput(400, message, "malformed_chat")


def decode_data_uri(url: object) -> bytes:
    if not isinstance(url, str):
        raise _bad("image_url.url must be a string")
    m = _DATA_URI.match(url)
    if m is None:
        raise _bad("image_url.url must be a data: URI (data:image/png;base64,...); the service does not "
                   "fetch remote URLs")
    if not m.group("b64"):
        raise _bad("image_url data URI must be base64-encoded (data:image/...;base64,...)")
    try:
        return base64.b64decode(url[m.end():], validate=True)
    except (binascii.Error, ValueError):
        raise _bad("image_url data URI is not valid base64") from None


def parse_chat_request(body: bytes) -> dict:
    """{model, image (bytes), retrieval, max_tools} from a chat-completions request body."""
    try:
        req = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(f"the body is not JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(req, dict):
        raise _bad("the body must be a JSON object")
    if req.get("stream"):
        raise _bad("stream=true is not supported; the answer is one JSON document")
    n = req.get("n", 1)
    if n != 1:
        raise _bad("only n=1 is supported")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list")
    images: list[bytes] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg:
            raise _bad(f"messages[{i}] must be an object with a role")
        content = msg.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise _bad(f"messages[{i}].content must be a string or a list of parts")
        for j, part in enumerate(content):
            if not isinstance(part, dict) or "type" not in part:
                raise _bad(f"messages[{i}].content[{j}] must be an object with a type")
            if part["type"] == "image_url":
                iu = part.get("image_url")
                url = iu.get("url") if isinstance(iu, dict) else iu
                images.append(decode_data_uri(url))
            elif part["type"] != "text":
                raise _bad(f"messages[{i}].content[{j}]: unsupported part type {part['type']!r} "
                           f"(use text and image_url)")
    if len(images) != 1:
        raise _bad(f"send exactly one image as an image_url part; got {len(images)}")
    opts = {"model": req.get("model") if isinstance(req.get("model"), str) else None, "image": images[0]}
    # max_tokens is accepted and ignored: the server's max_new_tokens applies to the whole batch
    for key, typ in (("retrieval", bool), ("max_tools", int)):
        v = req.get(key)
        if v is not None and (not isinstance(v, typ) or (typ is int and (isinstance(v, bool) or v < 1))):
            raise _bad(f"{key} must be {'a boolean' if typ is bool else 'a positive integer'}")
        opts[key] = v
    return opts


def chat_completion(answer: dict, model: str) -> dict:
    """The `chat.completion` object for one answer; content = the report's JSON."""
    content = json.dumps(answer["report"], ensure_ascii=False)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": content, "refusal": None}}],
        "safetyvlm": {"valid": answer["valid"], "errors": answer["errors"], "retrieval": answer["retrieval"],
                      "grounded": answer.get("grounded", False), "passage_ids": answer["passage_ids"], "batch_size": answer["batch_size"]},
    }
