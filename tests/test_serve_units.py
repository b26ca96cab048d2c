"""The service's pure parts: config from env/file, safe image decoding, the OpenAI request dialect."""

import asyncio
import base64
import io
import json
import time

import pytest
from PIL import Image

from safetyvlm.serve import uploads
from safetyvlm.serve.config import MissingToken, ServeConfig, load_config
from safetyvlm.serve.images import BadInput, decode_image
from safetyvlm.serve.openai_compat import chat_completion, parse_chat_request

LIMITS = dict(max_bytes=1_000_000, max_pixels=1_000_000)


def encode(w=40, h=30, fmt="PNG", mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), 128).save(buf, fmt)
    return buf.getvalue()


def test_config_layers_file_then_env(tmp_path):
    f = tmp_path / "serve.yaml"
    f.write_text("serve:\n  max_batch_size: 4\n  max_new_tokens: 50\n")
    cfg = load_config(f, environ={"SAFETYVLM_MAX_NEW_TOKENS": "32", "SAFETYVLM_TORCH_THREADS": "1",
                                  "SAFETYVLM_RETRIEVAL_DEFAULT": "on", "SAFETYVLM_RAG": "none"})
    assert (cfg.max_batch_size, cfg.max_new_tokens, cfg.torch_threads) == (4, 32, 1)
    assert cfg.retrieval_default is True and cfg.rag is None


def test_grounding_and_the_corpus_bound_are_on_unless_turned_off(tmp_path):
    cfg = load_config(environ={})
    assert cfg.ground is True and cfg.corpus_bound is True
    f = tmp_path / "serve.yaml"
    f.write_text("serve:\n  ground: false\n")
    assert load_config(f, environ={}).ground is False
    assert load_config(environ={"SAFETYVLM_CORPUS_BOUND": "off"}).corpus_bound is False
    with pytest.raises(ValueError, match="SAFETYVLM_GROUND: expected a boolean"):
        load_config(environ={"SAFETYVLM_GROUND": "sometimes"})


@pytest.mark.parametrize("env, message", [
    ({"SAFETYVLM_MAX_BATCH_SIZE": "0"}, "max_batch_size must be >= 1"),
    ({"SAFETYVLM_RETRIEVAL_DEFAULT": "maybe"}, "SAFETYVLM_RETRIEVAL_DEFAULT: expected a boolean"),
    ({"SAFETYVLM_MAX_PIXELS": "lots"}, "SAFETYVLM_MAX_PIXELS"),
    ({"SAFETYVLM_CACHE": "paged"}, "cache must be one of"),
])
def test_config_errors_name_the_setting(env, message):
    with pytest.raises(ValueError, match=message):
        load_config(environ=env)


def test_traffic_limits_from_config():
    assert load_config(environ={}).traffic() == {"timeout": 120}
    cfg = load_config(environ={"SAFETYVLM_MAX_CONCURRENCY": "4", "SAFETYVLM_TIMEOUT_S": "3",
                               "SAFETYVLM_BODY_TIMEOUT_S": "2"})
    # the cap is the service's Gate (a slot once the body is in), not BentoML's
    assert cfg.traffic() == {"timeout": 3} and cfg.max_concurrency == 4
    with pytest.raises(ValueError, match="max_concurrency must be >= 1"):
        load_config(environ={"SAFETYVLM_MAX_CONCURRENCY": "0"})


def test_body_limits_from_config():
    cfg = load_config(environ={})
    assert (cfg.body_timeout_s, cfg.linger_s, cfg.linger_bytes) == (60, 30, 128 * 1024 * 1024)
    cfg = load_config(environ={"SAFETYVLM_BODY_TIMEOUT_S": "5", "SAFETYVLM_LINGER_S": "0",
                               "SAFETYVLM_LINGER_BYTES": "1000"})
    assert (cfg.body_timeout_s, cfg.linger_s, cfg.linger_bytes) == (5, 0, 1000)
    # a body deadline at or past the request timeout would let the 504 cut a trickling upload first
    with pytest.raises(ValueError, match=r"body_timeout_s must be >= 1 and below timeout_s \(3\)"):
        load_config(environ={"SAFETYVLM_TIMEOUT_S": "3"})
    with pytest.raises(ValueError, match="linger_bytes must be >= 0"):
        load_config(environ={"SAFETYVLM_LINGER_BYTES": "-1"})


def test_config_file_refuses_unknown_keys(tmp_path):
    f = tmp_path / "serve.yaml"
    f.write_text("max_batchsize: 4\n")
    with pytest.raises(ValueError, match="unknown keys.*max_batchsize"):
        load_config(f, environ={})


def test_token_only_from_its_env_var(monkeypatch):
    cfg = ServeConfig(auth_token_env="MY_TOKEN")
    monkeypatch.setenv("MY_TOKEN", "s3cret")
    assert cfg.api_token() == "s3cret" and "s3cret" not in json.dumps(cfg.to_dict())


@pytest.mark.parametrize("value", [None, ""])
def test_no_token_with_auth_on_is_an_error_not_an_open_service(monkeypatch, value):
    monkeypatch.delenv("MY_TOKEN", raising=False)
    if value is not None:
        monkeypatch.setenv("MY_TOKEN", value)
    with pytest.raises(MissingToken, match="MY_TOKEN is unset or empty.*SAFETYVLM_AUTH=off"):
        ServeConfig(auth_token_env="MY_TOKEN").api_token()
    # only an explicit switch turns auth off, and then even a set token is not used
    monkeypatch.setenv("MY_TOKEN", "s3cret")
    assert load_config(environ={"SAFETYVLM_AUTH": "off", "SAFETYVLM_AUTH_TOKEN_ENV": "MY_TOKEN"}).api_token() is None
    assert load_config(environ={}).auth is True and load_config(environ={}).kb_verify is True


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_decodes_common_formats_to_rgb(fmt):
    im = decode_image(encode(40, 30, fmt), **LIMITS)
    assert im.size == (40, 30) and im.mode == "RGB"


def test_decodes_rgba_and_grayscale():
    assert decode_image(encode(mode="RGBA"), **LIMITS).mode == "RGB"
    assert decode_image(encode(mode="L"), **LIMITS).mode == "RGB"


@pytest.mark.parametrize("data, status, reason", [
    (b"", 400, "empty"),
    (b"this is not an image", 400, "not_an_image"),
    (encode(200, 200)[:200], 400, "corrupt"),                  # truncated
    (encode(fmt="TGA"), 415, "unsupported_format"),
    (encode(fmt="ICO"), 415, "unsupported_format"),
    (encode(2000, 1000), 413, "too_many_pixels"),              # 2 MP, a few kB on the wire
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 400, "not_an_image"),  # a PNG signature and garbage
])
def test_bad_bytes_are_refused_with_a_reason(data, status, reason):
    with pytest.raises(BadInput) as e:
        decode_image(data, **LIMITS)
    assert (e.value.status, e.value.reason) == (status, reason)
    assert str(e.value)


def test_body_limit():
    with pytest.raises(BadInput) as e:
        decode_image(encode(), max_bytes=10, max_pixels=10**6)
    assert e.value.status == 413


def test_pixel_limit_is_checked_before_decoding():
    # a 30000x30000 PNG header with no pixel data: refusing it must not need the (absent) pixels
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    with pytest.raises(BadInput) as e:
        decode_image(data, max_bytes=10**6, max_pixels=10**8)
    assert (e.value.status, e.value.reason) == (413, "too_many_pixels") and "900000000 pixels" in str(e.value)


def data_uri(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat(content, **extra) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": content}], **extra}).encode()


def test_chat_request_with_one_image():
    png = encode()
    req = parse_chat_request(chat([{"type": "text", "text": "what tools?"},
                                   {"type": "image_url", "image_url": {"url": data_uri(png)}}], max_tools=2))
    assert req["image"] == png and req["max_tools"] == 2 and req["retrieval"] is None and req["model"] == "m"


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not JSON"),
    (b"[]", "JSON object"),
    (json.dumps({"messages": []}).encode(), "non-empty list"),
    (chat("just text"), "exactly one image"),
    (chat([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]), "data: URI"),
    (chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]), "not valid base64"),
    (chat([{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]), "base64-encoded"),
    (chat([{"type": "input_audio"}]), "unsupported part type"),
    (chat([{"type": "image_url", "image_url": {"url": data_uri(b"x")}}] * 2), "got 2"),
    (chat([{"type": "image_url", "image_url": {"url": data_uri(b"x")}}], stream=True), "stream"),
    (chat([{"type": "image_url", "image_url": {"url": data_uri(b"x")}}], max_tools=0), "max_tools"),
    (chat([{"type": "image_url", "image_url": {"url": data_uri(b"x")}}], retrieval="yes"), "retrieval"),
])
def test_malformed_chat_requests(body, message):
    with pytest.raises(BadInput, match=message) as e:
        parse_chat_request(body)
    assert e.value.status == 400


def test_chat_completion_carries_the_report_as_content():
    answer = {"report": {"tools": []}, "valid": True, "errors": [], "retrieval": False, "passage_ids": [],
              "batch_size": 3}
    out = chat_completion(answer, "safetyvlm")
    assert out["object"] == "chat.completion" and json.loads(out["choices"][0]["message"]["content"]) == {"tools": []}
    assert out["safetyvlm"]["batch_size"] == 3


def _body(chunks, delay=0.0):
    """An ASGI receive() over `chunks`, one message each, `delay` seconds apart."""
    sent = {"n": 0}

    async def receive():
        await asyncio.sleep(delay)
        i = sent["n"]
        sent["n"] += 1
        if i >= len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}
    return receive, sent


def test_body_is_read_within_its_bounds():
    receive, _ = _body([b"ab", b"cd"])
    assert asyncio.run(uploads.receive_body(receive, 4, 1)) == b"abcd"
    with pytest.raises(uploads.BodyTooLarge):
        asyncio.run(uploads.receive_body(_body([b"ab", b"cd"])[0], 3, 1))
    t0 = time.perf_counter()
    with pytest.raises(uploads.BodyTooSlow):
        asyncio.run(uploads.receive_body(_body([b"a"] * 100, delay=0.05)[0], 1000, 0.3))
    assert time.perf_counter() - t0 < 1
    with pytest.raises(uploads.ClientGone):
        asyncio.run(uploads.receive_body(_body([])[0], 10, 1))


def test_linger_stops_at_the_end_of_the_body_or_its_bounds():
    receive, sent = _body([b"x" * 10] * 5)
    assert asyncio.run(uploads.linger(receive, 1000, 5)) == 50 and sent["n"] == 5   # to the end, no further
    receive, sent = _body([b"x" * 10] * 100)
    assert asyncio.run(uploads.linger(receive, 25, 5)) == 30 and sent["n"] == 3     # the byte bound
    receive, _ = _body([b"x"] * 1000, delay=0.01)
    t0 = time.perf_counter()
    assert 0 < asyncio.run(uploads.linger(receive, 10**6, 0.2)) < 1000             # the time bound
    assert time.perf_counter() - t0 < 0.6
    assert asyncio.run(uploads.linger(_body([b"x"])[0], 10, 0)) == 0                # linger_s 0: none


def test_has_body_and_expect():
    assert uploads.has_body({"content-length": "5"}) and uploads.has_body({"transfer-encoding": "chunked"})
    assert not uploads.has_body({"content-length": "0"}) and not uploads.has_body({})
    assert uploads.expects_continue({"expect": "100-Continue"}) and not uploads.expects_continue({})
