"""A refused upload is answered, not reset (issue 25), against a real `bentoml serve` over real HTTP: bodies
of 2x, 10x and 50x the body limit (1 MiB here) sent by urllib, http.client, requests, httpx and a raw
socket that writes the whole body before it reads; each client reads the 413 (or, without the token,
the 401) and its JSON error, then gets a valid image answered. Also: Expect: 100-continue, a chunked
upload with no Content-Length, the chat and dashboard uploads, a trickling sender (408, no slot held),
and the API worker's memory while 50x bodies are refused. Each test prints its figures."""

import base64
import http.client
import io
import json
import os
import select
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import requests

from safetyvlm.data.render import render_scene
from safetyvlm.serve.config import load_config
from safetyvlm.serve.launch import ServeProcess, memory_mb

LIMIT = 1024 * 1024                      # SAFETYVLM_MAX_BODY_BYTES of the test server
TOKEN = "tok-refusals-" + os.urandom(8).hex()
BODY_TIMEOUT_S, LINGER_S, CAP = 3, 20, 2
SETTINGS = dict(SAFETYVLM_MAX_BODY_BYTES=LIMIT, SAFETYVLM_API_TOKEN=TOKEN, SAFETYVLM_BODY_TIMEOUT_S=BODY_TIMEOUT_S,
                SAFETYVLM_LINGER_S=LINGER_S, SAFETYVLM_MAX_CONCURRENCY=CAP, SAFETYVLM_MAX_NEW_TOKENS=32,
                SAFETYVLM_RETRIEVAL_DEFAULT="false")
# the Gate's own limit on any body (the chat route's base64 image): what the 413s quote
DECLARED_LIMIT = load_config(environ={k: str(v) for k, v in SETTINGS.items()}).request_body_limit()
SIZES = (2, 10, 50)
pytestmark = pytest.mark.slow


def _png() -> bytes:
    buf = io.BytesIO()
    render_scene(3)[0].save(buf, "PNG")
    return buf.getvalue()


SCENE = _png()
BIG = {n: b"\0" * (n * LIMIT) for n in SIZES}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refusals")
    with ServeProcess(tmp, tmp / "server.log", **SETTINGS) as s:
        print(f"\nserver ready in {s.ready_seconds:.1f} s on {s.url}")
        yield s
        log = s.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]


# --- the clients: each returns (status, parsed JSON body) -------------------------------------------------

def via_urllib(url, body, headers):
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def via_http_client(url, body, headers):
    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/" + url.split("/", 3)[3], body=body, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def via_requests(url, body, headers):
    r = requests.post(url, data=body, headers=headers, timeout=60)
    return r.status_code, r.json()


def via_httpx(url, body, headers):
    r = httpx.post(url, content=body, headers=headers, timeout=60)
    return r.status_code, r.json()


def read_response(sock) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one response, framed by its Content-Length; 100 Continue is returned as is."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    n = int(headers.get("content-length", 0))
    while len(rest) < n:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        rest += chunk
    return status, headers, rest[:n]


def closed_within(sock, seconds: float) -> float | None:
    """Seconds until the server closes the connection (EOF), or None if it is still open after `seconds`."""
    t0 = time.perf_counter()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    return time.perf_counter() - t0


def raw_head(url, path, length, headers) -> bytes:
    host = url.split("//")[1]
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {length}\r\n\r\n".encode()


def via_raw_socket(url, body, headers):
    """Headers and the whole body in one sendall, reading nothing until it is written (as curl without
    Expect, or a naive client); then the server must also close the connection, not hold it open."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("/", 3)[3]
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(raw_head(url, path, len(body), headers) + body)
        status, head, payload = read_response(sock)
        if status != 200:  # a refusal ends the connection once its body is read away
            assert head.get("connection") == "close", head
            assert closed_within(sock, 5) is not None, "connection still open 5 s after the whole body was sent"
        return status, json.loads(payload)


CLIENTS = {"urllib": via_urllib, "http.client": via_http_client, "requests": via_requests, "httpx": via_httpx,
           "raw socket": via_raw_socket}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PNG = {"Content-Type": "image/png"}


def valid_image_answered(srv, client) -> None:
    status, body = client(srv.url + "/analyze", SCENE, {**AUTH, **PNG})
    assert status == 200 and "tools" in body, (status, body)


# --- 413 and 401 for every client ------------------------------------------------------------------------

@pytest.mark.parametrize("name", CLIENTS)
@pytest.mark.parametrize("token, status, reason", [(True, 413, "body_too_large"), (False, 401, "unauthorized")])
def test_every_client_reads_the_refusal_of_a_large_upload(srv, name, token, status, reason):
    client, rows = CLIENTS[name], []
    for n in SIZES:
        t0 = time.perf_counter()
        got, body = client(srv.url + "/analyze", BIG[n], {**(AUTH if token else {}), **PNG})
        rows.append(f"{n}x ({n} MiB): {got} {body.get('reason')} in {time.perf_counter() - t0:.2f} s")
        assert got == status and body["reason"] == reason and body["error"], (n, got, body)
        if status == 413:
            assert f"{n * LIMIT} bytes" in body["error"] and str(DECLARED_LIMIT) in body["error"]
        valid_image_answered(srv, client)
    print(f"\n{name}, {'with' if token else 'without'} the token: " + "; ".join(rows))


def test_chat_and_dashboard_uploads_are_refused_readably(srv):
    """The other routes that take a body: /v1/chat/completions (JSON) and the dashboard's multipart upload
    (to /analyze, the token in its cookie), with urllib, which resets were seen with."""
    b64 = base64.b64encode(BIG[10]).decode()
    chat = json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64}}]}]}).encode()
    boundary = "safetyvlm-" + os.urandom(8).hex()
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + BIG[10] + f"\r\n--{boundary}--\r\n".encode()
    cases = [("/v1/chat/completions", chat, {**AUTH, "Content-Type": "application/json"}, 413),
             ("/v1/chat/completions", chat, {"Content-Type": "application/json"}, 401),
             ("/analyze", form, {"Cookie": f"safetyvlm_token={TOKEN}",
                                 "Content-Type": f"multipart/form-data; boundary={boundary}"}, 413),
             ("/analyze", form, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, 401)]
    for path, body, headers, status in cases:
        got, answer = via_urllib(srv.url + path, body, headers)
        print(f"\n{path} {len(body) / 2**20:.1f} MiB, {'token' if len(headers) > 1 else 'no token'}: {got} "
              f"{answer['reason']}")
        assert got == status and answer["reason"] in ("body_too_large", "unauthorized")
    valid_image_answered(srv, via_urllib)


def test_a_chunked_upload_past_the_limit_is_refused_readably(srv):
    """No Content-Length to refuse up front: the 413 comes once the limit is passed, and the rest lingers."""
    def chunks():
        for i in range(0, len(BIG[10]), 256 * 1024):
            yield BIG[10][i:i + 256 * 1024]

    r = httpx.post(srv.url + "/analyze", content=chunks(), headers={**AUTH, **PNG}, timeout=60)
    print(f"\nchunked 10x upload: {r.status_code} {r.json()}")
    assert r.status_code == 413 and r.json()["reason"] == "body_too_large"
    assert r.headers["connection"] == "close"
    valid_image_answered(srv, via_httpx)


# --- Expect: 100-continue ----------------------------------------------------------------------------------

@pytest.mark.parametrize("token, status", [(True, 413), (False, 401)])
def test_expect_100_continue_is_refused_without_the_body(srv, token, status):
    """The refusal comes instead of 100 Continue, and the connection closes at once (no body is awaited)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(raw_head(srv.url, "/analyze", 50 * LIMIT, {**(AUTH if token else {}), **PNG,
                                                                 "Expect": "100-continue"}))
        got, head, body = read_response(sock)
        closed = closed_within(sock, 5)
    print(f"\nExpect: 100-continue, 50 MiB declared, {'with' if token else 'without'} the token: {got} "
          f"{json.loads(body)['reason']}, closed after {closed}")
    assert got == status and head["connection"] == "close" and closed is not None and closed < 2


def test_expect_100_continue_is_continued_when_accepted(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
        sock.sendall(raw_head(srv.url, "/analyze", len(SCENE), {**AUTH, **PNG, "Expect": "100-continue"}))
        first, _, _ = read_response(sock)
        sock.sendall(SCENE)
        final, _, body = read_response(sock)
    assert (first, final) == (100, 200) and "tools" in json.loads(body)


# --- a trickling sender ----------------------------------------------------------------------------------

def trickle(srv, declared=100_000, every=0.25) -> tuple[int, dict, float]:
    """Send the headers, then 100 bytes every `every` s until the server answers; (status, body, seconds)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(raw_head(srv.url, "/analyze", declared, {**AUTH, **PNG}))
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 30 and not select.select([sock], [], [], every)[0]:
            sock.sendall(b"\0" * 100)
        status, _, body = read_response(sock)
        return status, json.loads(body), time.perf_counter() - t0


def test_a_trickling_sender_gets_a_408_and_holds_no_slot(srv):
    n = 2 * CAP
    with ThreadPoolExecutor(n + CAP) as pool:
        tricklers = [pool.submit(trickle, srv) for _ in range(n)]
        time.sleep(0.5)
        # while every trickler is still sending, the cap's slots are all free for real requests
        t0 = time.perf_counter()
        answered = [r.status_code for r in pool.map(
            lambda _: requests.post(srv.url + "/analyze", data=SCENE, headers={**AUTH, **PNG}, timeout=60),
            range(CAP))]
        during = time.perf_counter() - t0
        out = [f.result() for f in tricklers]
    print(f"\n{n} tricklers: {[(s, b['reason'], round(t, 2)) for s, b, t in out]}; meanwhile {CAP} valid "
          f"requests: {answered} in {during:.2f} s")
    assert answered == [200] * CAP
    for status, body, seconds in out:
        assert status == 408 and body["reason"] == "body_timeout" and str(BODY_TIMEOUT_S) in body["error"]
        assert BODY_TIMEOUT_S - 0.5 < seconds < BODY_TIMEOUT_S + 1.5
    valid_image_answered(srv, via_requests)


# --- memory ----------------------------------------------------------------------------------------------

def _reset_peak(pid: int) -> str:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM (peak) to the current RSS
        return "peak"
    except OSError:  # not root: the RSS after is all there is
        return "RSS after"


def _growth(pid: int, measured: str, before: float) -> float:
    rss, peak = memory_mb(pid)
    return (peak if measured == "peak" else rss) - before


def test_refusing_large_bodies_keeps_memory_flat(srv):
    """The API worker's memory while it refuses (and reads away) 50 MiB bodies. Declared too large (every
    client, with and without the token): nothing is buffered, only uvicorn's receive buffer of 64 KiB at a
    time passes through. Chunked (no Content-Length): the body-read buffer fills to the limit before the
    413 (DECLARED_LIMIT), and no further. 4 MiB of slack for what else the worker allocates meanwhile (up to
    2.3 MB measured on 2 busy cores); one buffered body would add 50."""
    pid, slack = srv.api_worker(), 4.0
    for client in CLIENTS.values():  # warm both paths: first-use allocations are not the bodies' doing
        for headers in ({**AUTH, **PNG}, PNG):
            client(srv.url + "/analyze", BIG[2], headers)
    measured = _reset_peak(pid)
    before, sent = memory_mb(pid)[0], 0
    for client in CLIENTS.values():
        for headers in ({**AUTH, **PNG}, PNG):
            status, _ = client(srv.url + "/analyze", BIG[50], headers)
            assert status in (413, 401)
            sent += len(BIG[50])
    declared = _growth(pid, measured, before)
    measured = _reset_peak(pid)
    before = memory_mb(pid)[0]
    for _ in range(3):
        r = httpx.post(srv.url + "/analyze", content=(BIG[50][i:i + 2**20] for i in range(0, len(BIG[50]), 2**20)),
                       headers={**AUTH, **PNG}, timeout=60)
        assert r.status_code == 413
    chunked = _growth(pid, measured, before)
    budget = DECLARED_LIMIT / 2**20
    print(f"\nAPI worker, {measured} RSS growth: {sent / 2**20:.0f} MiB declared too large -> +{declared:.2f} MB; "
          f"3 x 50 MiB chunked -> +{chunked:.2f} MB (body-read buffer {budget:.2f} MB)")
    assert declared <= slack, declared
    assert chunked <= budget + slack, chunked
