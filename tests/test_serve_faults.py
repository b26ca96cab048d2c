"""Faults, overload, bombs and recovery against a real `bentoml serve` (the shipped tiny model, no packaging)
with traffic limits on: max_concurrency 4 (429 beyond), timeout 3 s (504), body timeout 2 s (408), bearer auth. One server for
the module; the tests that kill its processes run last. Each prints its figures."""

import base64
import io
import os
import re
import signal
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

import safetyvlm

from safetyvlm.data.render import render_scene
from safetyvlm.schema import SafetyReport
from safetyvlm.serve.launch import ServeProcess, memory_mb
from safetyvlm.serve.openapi import spec

FAULTS = Path(__file__).parent / "fixtures" / "fault_injection"
TOKEN = "tok-faults-" + os.urandom(8).hex()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAP, TIMEOUT_S, BODY_TIMEOUT_S = 4, 3, 2
pytestmark = pytest.mark.slow


def encode(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


SCENE = encode(render_scene(3)[0])


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    # the model worker raises a server fault while this file exists (tests/fixtures/fault_injection)
    flag = tmp / "fault"
    path = os.pathsep.join([str(FAULTS), str(Path(safetyvlm.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    # max_pixels and max_body_bytes stay at their defaults (40 MP, 10 MB): the bombs meet the real limits
    with ServeProcess(tmp, tmp / "server.log", SAFETYVLM_MAX_NEW_TOKENS=64, SAFETYVLM_MAX_BATCH_SIZE=8,
                      SAFETYVLM_BATCH_WAIT_MS=50, SAFETYVLM_MAX_CONCURRENCY=CAP, SAFETYVLM_TIMEOUT_S=TIMEOUT_S,
                      SAFETYVLM_BODY_TIMEOUT_S=BODY_TIMEOUT_S,
                      SAFETYVLM_RETRIEVAL_DEFAULT="false", SAFETYVLM_API_TOKEN=TOKEN,
                      PYTHONPATH=path.rstrip(os.pathsep), SAFETYVLM_TEST_FAULT=flag) as s:
        print(f"\nserver ready in {s.ready_seconds:.1f} s on {s.url}")
        s.fault_flag = flag
        yield s


def analyze(srv, data=SCENE, ctype="image/png", timeout=60, **kw):
    return requests.post(srv.url + "/analyze", data=data, headers={**AUTH, "Content-Type": ctype},
                         timeout=timeout, **kw)


def in_progress(srv) -> float:
    text = requests.get(srv.url + "/metrics", headers=AUTH, timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("bentoml_service_request_in_progress{") and 'endpoint="/analyze' in line)


def wait_idle(srv, limit=15.0) -> float:
    """Seconds until no /analyze (API side) nor /analyze_batch (model side) is in progress."""
    t0 = time.perf_counter()
    while in_progress(srv) > 0:
        assert time.perf_counter() - t0 < limit, "work still in progress: stuck"
        time.sleep(0.1)
    return time.perf_counter() - t0


def raw_request(srv, body: bytes, declared: int, headers="Content-Type: image/png\r\n") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    sock.sendall((f"POST /analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n{headers}"
                  f"Content-Length: {declared}\r\n\r\n").encode() + body)
    return sock


# --- security ---------------------------------------------------------------------------------------

def test_no_route_but_the_health_checks_answers_without_the_token(srv):
    docs = requests.get(srv.url + "/docs.json", headers=AUTH, timeout=10).json()
    routes = {(m.upper(), p) for p, ops in {**docs["paths"], **spec()["paths"]}.items() for m in ops}
    routes |= {("GET", "/"), ("GET", "/docs"), ("GET", "/docs.json"), ("POST", "/analyze_batch"),
               ("GET", "/nonexistent")}
    opened = {}
    for method, path in sorted(routes):
        r = requests.request(method, srv.url + path, data=SCENE, timeout=30,
                             headers={"Content-Type": "image/png", "Authorization": "Bearer not-it"})
        opened[(method, path)] = r.status_code
        assert TOKEN not in r.text
    health = {k: v for k, v in opened.items() if k[1] in ("/livez", "/readyz", "/healthz")}
    others = {k: v for k, v in opened.items() if k not in health}
    print(f"\n{len(others)} routes without the token: {sorted(set(others.values()))}; health: {health}")
    assert set(health.values()) == {200} and len(health) == 3
    assert set(others.values()) == {401}, others


def test_errors_never_echo_the_token_or_the_config(srv):
    bodies = [analyze(srv, b"junk").text, analyze(srv, b"").text,
              requests.get(srv.url + "/info", headers=AUTH, timeout=30).text,
              requests.post(srv.url + "/v1/chat/completions", data=b"{", timeout=30,
                            headers={**AUTH, "Content-Type": "application/json"}).text]
    for body in bodies:
        assert TOKEN not in body and "Traceback" not in body
    assert requests.get(srv.url + "/info", headers=AUTH, timeout=30).json()["auth"] is True


# --- overload and timeouts ----------------------------------------------------------------------------

def test_beyond_the_concurrency_cap_is_429_at_once(srv):
    n = 16
    barrier = threading.Barrier(n)

    def one(_):
        barrier.wait()
        t0 = time.perf_counter()
        r = analyze(srv)
        return r.status_code, (time.perf_counter() - t0) * 1000, r

    with ThreadPoolExecutor(n) as pool:
        out = list(pool.map(one, range(n)))
    statuses = sorted(s for s, _, _ in out)
    fast = sorted(ms for s, ms, _ in out if s == 429)
    print(f"\n{n} at once, cap {CAP}: {statuses.count(200)} x 200, {statuses.count(429)} x 429; 429 latency "
          f"median {fast[len(fast) // 2]:.1f} ms, max {fast[-1]:.1f} ms")
    assert set(statuses) <= {200, 429} and statuses.count(429) >= n - 2 * CAP and statuses.count(200) >= 1
    assert fast[-1] < 100, fast
    for s, _, r in out:
        if s == 200:
            SafetyReport.model_validate(r.json())
    wait_idle(srv)


def test_a_stalled_upload_is_408_at_the_body_timeout_and_frees_its_slot(srv):
    """A client that sends its headers and a first part of the body, then stalls (slowloris)."""
    sock = raw_request(srv, SCENE[:1000], len(SCENE))
    t0 = time.perf_counter()
    head = sock.recv(4096)
    elapsed = time.perf_counter() - t0
    while b"}" not in head and (more := sock.recv(4096)):  # the JSON body may come in a second segment
        head += more
    head = head.decode(errors="replace")
    sock.close()
    print(f"\nstalled upload answered {head.split(chr(13))[0]!r} after {elapsed:.2f} s (body timeout "
          f"{BODY_TIMEOUT_S} s)")
    assert head.startswith("HTTP/1.1 408") and '"reason":"body_timeout"' in head
    assert BODY_TIMEOUT_S - 0.5 < elapsed < BODY_TIMEOUT_S + 1.5
    wait_idle(srv)
    with ThreadPoolExecutor(CAP) as pool:  # every slot is free again
        assert [r.status_code for r in pool.map(lambda _: analyze(srv), range(CAP))] == [200] * CAP


def test_a_request_past_its_timeout_is_504_and_frees_its_slot(srv):
    """The model takes longer than the timeout (injected: generation sleeps TIMEOUT_S + 2 s)."""
    srv.fault_flag.write_text(f"slow {TIMEOUT_S + 2}")
    try:
        t0 = time.perf_counter()
        r = analyze(srv)
        elapsed = time.perf_counter() - t0
    finally:
        srv.fault_flag.unlink()
    print(f"\nslow model call answered {r.status_code} after {elapsed:.2f} s (timeout {TIMEOUT_S} s)")
    assert r.status_code == 504 and TIMEOUT_S - 0.5 < elapsed < TIMEOUT_S + 2
    wait_idle(srv)
    with ThreadPoolExecutor(CAP) as pool:
        assert [r.status_code for r in pool.map(lambda _: analyze(srv), range(CAP))] == [200] * CAP


def test_clients_that_disconnect_leave_no_stuck_work(srv):
    # mid-upload: more of them than the cap, so a leaked slot would show as a 429 below
    for _ in range(2 * CAP):
        raw_request(srv, SCENE[:2000], len(SCENE)).close()
    # mid-request: the whole upload sent, gone before the model answers
    for _ in range(2 * CAP):
        raw_request(srv, SCENE, len(SCENE)).close()
    idle = wait_idle(srv)
    print(f"\n{4 * CAP} disconnected clients: idle again after {idle:.2f} s")
    with ThreadPoolExecutor(CAP) as pool:
        rs = list(pool.map(lambda _: analyze(srv), range(CAP)))
    assert [r.status_code for r in rs] == [200] * CAP
    log = srv.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_a_model_call_that_raises_fails_only_its_own_request(srv):
    """A 1x10000 image passes the API checks but the model's processor raises (aspect ratio > 200): its
    batch is split until the culprit is alone; the others in the batch get their reports."""
    wide = encode(Image.new("RGB", (1, 10000), (90, 90, 90)))
    payloads = [SCENE, SCENE, wide, SCENE]
    barrier = threading.Barrier(len(payloads))

    def one(data):
        barrier.wait()
        return analyze(srv, data, params={"detail": "true"})

    with ThreadPoolExecutor(len(payloads)) as pool:
        rs = list(pool.map(one, payloads))
    print(f"\nbatch with a poisoned image: {[r.status_code for r in rs]}, "
          f"batch sizes {[r.headers.get('x-safetyvlm-batch-size') for r in rs]}")
    assert rs[2].status_code == 422 and rs[2].json()["reason"] == "model_error"
    assert "aspect ratio" in rs[2].json()["error"]
    for r in rs[:2] + rs[3:]:
        assert r.status_code == 200, r.text
        SafetyReport.model_validate(r.json()["report"])


@pytest.mark.parametrize("kind", ["oom", "bug"])
def test_a_server_fault_is_a_500_with_an_error_id_in_the_log(srv, kind):
    """Out of memory or a bug in the model process is the server's fault, whatever the image: 500, an id
    the log carries at ERROR level, never a 422 that tells the client to change its input."""
    srv.fault_flag.write_text(kind)
    try:
        r = analyze(srv)
        chat = requests.post(srv.url + "/v1/chat/completions", timeout=60, headers=AUTH, json={
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
                "url": "data:image/png;base64," + base64.b64encode(SCENE).decode()}}]}]})
    finally:
        srv.fault_flag.unlink()
    print(f"\ninjected {kind}: /analyze {r.status_code} {r.text[:160]}; chat {chat.status_code}")
    for resp in (r, chat):
        assert resp.status_code == 500, resp.text
        body = resp.json()
        assert body["reason"] == "internal_error" and len(body["error_id"]) == 16
        assert body["error_id"] in body["error"] and "Traceback" not in resp.text
        log = srv.log_path.read_text(errors="replace")
        assert re.search(rf"\[ERROR\].*internal error {body['error_id']} in the model process", log), log[-2000:]
    assert analyze(srv).status_code == 200                        # the fault gone, the service answers


# --- bombs and odd images ------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side=30000) -> bytes:
    """A real 1-bit PNG, side x side black pixels (900 MP) in ~100 KB of zlib."""
    z, row, parts = zlib.compressobj(9), b"\0" * (side // 8 + 1), []
    for _ in range(side // 1000):
        parts.append(z.compress(row * 1000))
    parts.append(z.flush())
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def gif_bomb() -> bytes:
    """A GIF whose screen and frame claim 65535 x 65535 pixels."""
    data = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)                 # logical screen
    i = data.index(b"\x2c")                                       # image descriptor
    data[i + 5:i + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def tiff_bomb() -> bytes:
    """A deflate TIFF whose tags claim 100000 x 100000 pixels."""
    data = bytearray(encode(Image.new("L", (8, 8)), "TIFF", compression="tiff_deflate"))
    ifd = struct.unpack("<I", data[4:8])[0]
    for k in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        e = ifd + 2 + 12 * k
        if struct.unpack("<H", data[e:e + 2])[0] in (256, 257):  # ImageWidth, ImageLength
            data[e + 2:e + 12] = struct.pack("<HII", 4, 1, 100000)
    return bytes(data)


def webp_bomb() -> bytes:
    """A lossless WebP whose header claims 16384 x 16384 pixels (the format's maximum)."""
    data = bytearray(encode(Image.new("RGB", (8, 8)), "WEBP", lossless=True))
    i = data.index(b"VP8L") + 8 + 1                               # chunk header, then the 0x2f signature
    bits = struct.unpack("<I", data[i:i + 4])[0]
    data[i:i + 4] = struct.pack("<I", (bits & ~((1 << 28) - 1)) | (16383 | 16383 << 14))
    return bytes(data)


def frames(fmt: str, n: int, size=(400, 400), **kw) -> bytes:
    ims = [Image.new("RGB", size, (i % 256, 40, 90)) for i in range(n)]
    return encode(ims[0], fmt, save_all=True, append_images=ims[1:], **kw)


ODD = {  # name -> (bytes, the statuses it may get)
    "png bomb 30000x30000": (png_bomb, {413}),
    "gif bomb 65535x65535": (gif_bomb, {413}),
    "tiff bomb 100000x100000": (tiff_bomb, {413}),
    "webp bomb 16384x16384": (webp_bomb, {413}),
    "animated gif, 300 frames": (lambda: frames("GIF", 300), {200}),
    "multi-page tiff, 100 pages": (lambda: frames("TIFF", 100, (400, 400), compression="tiff_deflate"), {200}),
    "1x1": (lambda: encode(Image.new("RGB", (1, 1))), {200}),
    "1x10000": (lambda: encode(Image.new("RGB", (1, 10000))), {422}),
    "10000x1": (lambda: encode(Image.new("RGB", (10000, 1))), {422}),
    "cmyk jpeg": (lambda: encode(render_scene(4)[0].convert("CMYK"), "JPEG"), {200}),
    "16-bit png": (lambda: encode(render_scene(4)[0].convert("I;16")), {200}),
    "palette png": (lambda: encode(render_scene(4)[0].convert("P")), {200}),
    "rgba png": (lambda: encode(render_scene(4)[0].convert("RGBA")), {200}),
    "la png": (lambda: encode(render_scene(4)[0].convert("LA")), {200}),
}


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def test_bombs_and_odd_images_are_refused_or_answered_in_bounded_memory(srv):
    payloads = {name: make() for name, (make, _) in ODD.items()}
    workers = [srv.api_worker(), srv.model_worker()]
    try:
        for pid in workers:
            _reset_peak(pid)
        measured = "peak"
    except OSError:  # no clear_refs (not root): peak since start is all there is
        measured = "peak since start"
    before = {pid: memory_mb(pid)[0] for pid in workers}
    rows, bad = [], []
    for name, data in payloads.items():
        r = analyze(srv, data, ctype="application/octet-stream", timeout=60)
        rows.append(f"{name}: {len(data)} bytes -> {r.status_code} {r.json().get('reason', '')}")
        if r.status_code not in ODD[name][1]:
            bad.append(rows[-1] + " " + r.text[:200])
        if r.status_code == 200:
            SafetyReport.model_validate(r.json())
    growth = {pid: memory_mb(pid)[1] - before[pid] for pid in workers}
    print("\n" + "\n".join(rows))
    print(f"{measured} RSS growth while handling them: API worker {growth[workers[0]]:.1f} MB, "
          f"model worker {growth[workers[1]]:.1f} MB")
    assert not bad, bad
    assert all(g <= 100 for g in growth.values()), growth


# --- recovery (these kill processes: last) ---------------------------------------------------------

def test_a_killed_api_worker_is_restarted(srv):
    old = srv.api_worker()
    os.kill(old, signal.SIGKILL)
    t0 = time.perf_counter()
    while True:
        try:
            new = srv.api_worker()
        except LookupError:
            new = old
        if new != old and srv.ready(timeout=2):
            break
        assert time.perf_counter() - t0 < 30, "API worker not back within 30 s"
        time.sleep(0.1)
    back = time.perf_counter() - t0
    r = analyze(srv)
    print(f"\nAPI worker {old} killed: worker {new} ready after {back:.1f} s")
    assert r.status_code == 200 and SafetyReport.model_validate(r.json())


def test_a_killed_model_worker_under_load_recovers_within_30_s(srv):
    stop, results = threading.Event(), []

    def client():
        while not stop.is_set():
            t = time.perf_counter()
            try:
                r = analyze(srv, timeout=60)
                results.append((t, r.status_code))
            except requests.RequestException as e:
                results.append((t, type(e).__name__))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    t_kill = time.perf_counter()
    os.kill(srv.model_worker(), signal.SIGKILL)
    unready_at = ready_at = None
    while time.perf_counter() - t_kill < 45:
        ok = srv.ready(timeout=1)
        now = time.perf_counter()
        if not ok and unready_at is None:
            unready_at = now
        if ok and unready_at is not None:
            ready_at = now
            break
        time.sleep(0.1)
    # the clients get answers again: on a loaded machine the first requests after readiness can still
    # time out (504) while the new worker warms up, so wait for a 200 (bounded), not a fixed sleep
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and not any(t > t_kill and s == 200 for t, s in list(results)):
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=70)
    after = [s for t, s in results if t > t_kill]
    first_ok = min((t for t, s in results if t > t_kill and s == 200), default=None)
    gap = ready_at - t_kill if ready_at else None

    def secs(x):
        return "never" if x is None else f"{x:.1f} s"

    print(f"\nmodel worker killed under load: readiness lost after {(unready_at or t_kill) - t_kill:.2f} s, "
          f"back after {secs(gap)}; first 200 sent {secs(first_ok and first_ok - t_kill)} after the kill; statuses after "
          f"the kill: { {s: after.count(s) for s in set(after)} }, before: {len(results) - len(after)} requests")
    assert unready_at is not None and ready_at is not None and gap < 30
    assert set(after) <= {200, 503, 504} and 200 in after      # no connection failure, no 500
    assert first_ok is not None
