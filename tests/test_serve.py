"""The real service over real HTTP: `bentoml serve` on 127.0.0.1 with the shipped tiny model, packaged
into a throwaway BentoML store with a retrieval index built here, bearer auth on. One server for the
module (start ≈10 s); the dashboard is driven by headless Chromium against the same server.
"""

import base64
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

from safetyvlm.data.render import render_scene
from safetyvlm.kb import ground_report, load_kb
from safetyvlm.schema import SafetyReport
from safetyvlm.serve.launch import descendants, free_port, processes, serve_env

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "models" / "shipped" / "qwen2_5_vl-tiny"
MAX_NEW = 400  # room for the full report the shipped bases write
ARTIFACTS = ROOT / "tests" / "artifacts"
TOKEN = "tok-" + secrets.token_hex(16)
MAX_BODY = 300_000
MAX_PIXELS = 1_000_000
pytestmark = pytest.mark.slow


def png_bytes(im: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def scene(seed=3, size=None) -> Image.Image:
    im, _ = render_scene(seed)
    return im.resize(size) if size else im


class Server:
    def __init__(self, url, log, proc):
        self.url, self.log, self.proc = url, log, proc
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def get(self, path, **kw):
        kw.setdefault("headers", self.auth)
        return requests.get(self.url + path, timeout=120, **kw)

    def post(self, path, **kw):
        kw.setdefault("headers", self.auth)
        return requests.post(self.url + path, timeout=120, **kw)

    def analyze(self, data: bytes, params=None, **kw):
        return self.post("/analyze", files={"image": ("scene.png", data, "image/png")}, params=params, **kw)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """The shipped tiny model + a freshly built faiss index, stored with the package library."""
    from safetyvlm.rag.config import RagConfig
    from safetyvlm.rag.index import build_index

    tmp = tmp_path_factory.mktemp("serve")
    home, rag = tmp / "bentoml", tmp / "rag"
    build_index(RagConfig(), rag)
    # in a child: bentoml fixes its store location on first use, and this process must not keep it
    tag = subprocess.run(
        [sys.executable, "-c", "import sys; from safetyvlm.serve.package import package_model; "
         "print(package_model(sys.argv[1], None, sys.argv[2], params={'test': True}, "
         "metrics={'name_f1': 0.5}, repo_dir=sys.argv[3]))", str(TINY), str(rag), str(ROOT)],
        env=serve_env(home), capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return {"home": home, "tag": tag, "tmp": tmp}


@pytest.fixture(scope="module")
def server(packaged):
    port = free_port()
    log_path = packaged["tmp"] / "server.log"
    env = serve_env(packaged["home"], SAFETYVLM_MODEL="safetyvlm:latest", SAFETYVLM_MAX_NEW_TOKENS=str(MAX_NEW),
                    SAFETYVLM_TORCH_THREADS="1", SAFETYVLM_MAX_BATCH_SIZE="8", SAFETYVLM_BATCH_WAIT_MS="50",
                    SAFETYVLM_MAX_BODY_BYTES=str(MAX_BODY), SAFETYVLM_MAX_PIXELS=str(MAX_PIXELS),
                    SAFETYVLM_API_TOKEN=TOKEN, SAFETYVLM_DRAIN_S="0")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "safetyvlm.serve.service:SafetyVLM",
                                 "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # refused while starting, or a slow probe
                pass
            if time.perf_counter() - t0 > 180:
                raise RuntimeError(f"not ready after 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        print(f"\nbentoml serve ready in {time.perf_counter() - t0:.1f} s on {url}")
        yield Server(url, log_path, proc)
    finally:
        # the workers BentoML started (each in its own process group), then the arbiter's group
        workers = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            # usually ~1 s; BentoML's API worker has been seen to sit out SIGTERM after a busy run, and
            # then to outlive the arbiter, so wait briefly and kill what is left of this server by pid
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def assert_answers_again(server):
    r = server.analyze(png_bytes(scene()))
    assert r.status_code == 200, r.text
    SafetyReport.model_validate(r.json())


# --- health, auth -----------------------------------------------------------------------------------

def test_health_checks_need_no_token(server):
    for path in ("/livez", "/readyz"):
        assert requests.get(server.url + path, timeout=10).status_code == 200


def test_every_other_route_needs_the_token(server):
    png = png_bytes(scene())
    for bad in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = server.analyze(png, headers=bad)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in r.json()["error"] and TOKEN not in r.text
        for path in ("/metrics", "/info", "/v1/models", "/docs.json"):
            assert server.get(path, headers=bad).status_code == 401, path
    page = server.get("/", headers={})
    assert page.status_code == 401 and 'id="auth"' in page.text  # the page that asks for the token
    assert server.get("/info").status_code == 200
    assert server.get("/info", headers={}, cookies={"safetyvlm_token": TOKEN}).status_code == 200


# --- /analyze ---------------------------------------------------------------------------------------

def test_valid_image_gives_the_contract_with_boxes_in_its_pixels(server):
    """A 448x300 upload (not the model's 224 grid): the answer equals what the library predicts for the
    same image in-process, grounded in the knowledge base (the service default), boxes in the uploaded
    image's pixels."""
    from safetyvlm.model.loader import load_model
    from safetyvlm.answer.plain import predict_reports

    im = scene(3, (448, 300))
    t0 = time.perf_counter()
    r = server.analyze(png_bytes(im), params={"retrieval": "false", "detail": "true"})
    print(f"\none /analyze (no retrieval): {(time.perf_counter() - t0) * 1000:.0f} ms")
    assert r.status_code == 200, r.text
    body = r.json()
    report = SafetyReport.model_validate(body["report"])
    assert body["retrieval"] is False and r.headers["x-safetyvlm-retrieval"] == "false"
    import torch

    model, processor, info = load_model(TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the service: the same reduction order, the same greedy tokens
    try:
        [(expected, raw)] = predict_reports(model, processor, info["family"], [im], max_new_tokens=MAX_NEW)
    finally:
        torch.set_num_threads(threads)
    assert body["raw_text"] == raw and body["grounded"] is True
    assert report.model_dump() == ground_report(expected.report).model_dump()
    assert report.tools, "the tiny model finds tools in this scene"
    assert all(0 < t.score <= 1 for t in report.tools)  # the model's probability of each name, in the contract
    for t in report.tools:
        x1, y1, x2, y2 = t.bbox_2d
        assert 0 <= x1 <= x2 <= 448 and 0 <= y1 <= y2 <= 300


def test_raw_body_and_multipart_agree(server):
    png = png_bytes(scene())
    a = server.analyze(png, params={"retrieval": "false"})
    b = server.post("/analyze", data=png, params={"retrieval": "false"},
                    headers={**server.auth, "Content-Type": "image/png"})
    c = server.post("/analyze", data=png, params={"retrieval": "false"},
                    headers={**server.auth, "Content-Type": "application/octet-stream"})
    assert a.status_code == b.status_code == c.status_code == 200
    assert a.json() == b.json() == c.json() and set(a.json()) == {"tools"}


def test_retrieval_cites_knowledge_base_passages(server):
    # scene 15, where the shipped Qwen base's second pass (passages in its prompt) names a tool; bases
    # before segment 8 never saw passages in training and on most scenes named none there
    r = server.analyze(png_bytes(scene(15)), params={"retrieval": "true", "detail": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    corpus_ids = {p.id for p in load_kb().corpus}
    assert body["retrieval"] is True and body["passage_ids"] and set(body["passage_ids"]) <= corpus_ids
    tools = SafetyReport.model_validate(body["report"]).tools
    assert tools
    kb = load_kb()
    for t in tools:  # grounded: the KB entry of the tool's name, and the corpus passages about it
        assert t.sources == [p.id for p in kb.passages_for(t.name)]
        assert t.model_dump(include=set(kb.safety_fields(t.name))) == kb.safety_fields(t.name)
    info = server.get("/info").json()["model"]  # the packaged index holds only the checked corpus's chunks
    assert info["grounded"] is True and info["corpus_bound"] is True and info["untrusted_chunks"] == 0
    # (whether the second pass names the right tools is the model's quality, not the service's contract:
    # the eval stage's "+ RAG" rows measure it)


def test_max_tools_caps_the_answer(server):
    png = png_bytes(scene())
    full = server.analyze(png, params={"retrieval": "false"}).json()["tools"]
    assert len(full) >= 2
    capped = server.analyze(png, params={"retrieval": "false", "max_tools": "1"}).json()["tools"]
    assert capped == full[:1]
    form = server.post("/analyze", files={"image": ("s.png", png, "image/png")},
                       data={"max_tools": "1", "retrieval": "false"})
    assert form.json()["tools"] == full[:1]


def _chunked(data: bytes):
    for i in range(0, len(data), 65536):
        yield data[i:i + 65536]


def _noise_png(n_bytes: int) -> bytes:
    import numpy as np

    side = int((n_bytes / 3) ** 0.5) + 8
    arr = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    return png_bytes(Image.fromarray(arr))


def _tga() -> bytes:
    return png_bytes(scene(), "TGA")


BAD_UPLOADS = {
    "not an image": (lambda: b"%PDF-1.7 definitely not a picture", "image/png", 400, "not_an_image"),
    "zero bytes": (lambda: b"", "image/png", 400, "empty"),
    "truncated png": (lambda: png_bytes(scene())[:1500], "image/png", 400, "corrupt"),
    "truncated jpeg": (lambda: png_bytes(scene(), "JPEG")[:900], "image/jpeg", 400, "corrupt"),
    "unsupported format": (_tga, "image/x-tga", 415, "unsupported_format"),
    "too many pixels": (lambda: png_bytes(Image.new("RGB", (1200, 1000))), "image/png", 413, "too_many_pixels"),
    "body too large": (lambda: _noise_png(MAX_BODY + 50_000), "image/png", 413, "body_too_large"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
@pytest.mark.parametrize("how", ["multipart", "raw"])
def test_bad_uploads_are_4xx_with_a_reason(server, case, how):
    make, ctype, status, reason = BAD_UPLOADS[case]
    data = make()
    if how == "multipart":
        r = server.post("/analyze", files={"image": ("x", data, ctype)})
    else:
        r = server.post("/analyze", data=data, headers={**server.auth, "Content-Type": ctype})
    assert (r.status_code, r.json()["reason"]) == (status, reason), r.text
    assert r.json()["error"]


def test_chunked_body_beyond_the_limit_is_413(server):
    data = _noise_png(MAX_BODY + 50_000)
    r = server.post("/analyze", data=_chunked(data), headers={**server.auth, "Content-Type": "image/png"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413 and r.json()["reason"] == "body_too_large"


@pytest.mark.parametrize("kwargs, status, reason", [
    (dict(data=b'{"image": 1}', ctype="application/json"), 415, "wrong_content_type"),
    (dict(data=b"hello", ctype="text/plain"), 415, "wrong_content_type"),
    (dict(data=b"", ctype=None), 415, "wrong_content_type"),
    (dict(data=b"--xyz\r\nnot really multipart", ctype="multipart/form-data; boundary=xyz"), 400, None),
    (dict(files={"picture": ("a.png", b"x", "image/png")}), 400, "no_image"),
    (dict(files={"image": ("a.png", b"x", "image/png")}, params={"max_tools": "many"}), 400, "bad_option"),
    (dict(files={"image": ("a.png", b"x", "image/png")}, params={"retrieval": "perhaps"}), 400, "bad_option"),
])
def test_malformed_analyze_requests(server, kwargs, status, reason):
    kwargs = dict(kwargs)
    ctype = kwargs.pop("ctype", None)
    headers = dict(server.auth)
    if ctype:
        headers["Content-Type"] = ctype
    r = server.post("/analyze", headers=headers, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"] and (reason is None or r.json()["reason"] == reason)


def test_service_still_answers_after_bad_input(server):
    assert_answers_again(server)


# --- OpenAI-compatible route --------------------------------------------------------------------------

def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_openai_client_gets_the_report(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == ["safetyvlm"]
    out = client.chat.completions.create(model="safetyvlm", messages=[{"role": "user", "content": [
        {"type": "text", "text": "Which tools are on this bench and how are they used safely?"},
        {"type": "image_url", "image_url": {"url": data_uri(png_bytes(scene()))}}]}],
        extra_body={"retrieval": False})
    assert out.object == "chat.completion" and out.choices[0].message.role == "assistant"
    report = SafetyReport.model_validate_json(out.choices[0].message.content)
    direct = server.analyze(png_bytes(scene()), params={"retrieval": "false"}).json()
    assert report.model_dump() == direct


def test_openai_client_with_a_wrong_key_is_refused(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="not-the-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="safetyvlm", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("body, ctype, status", [
    (b"{broken", "application/json", 400),
    (json.dumps({"model": "x"}).encode(), "application/json", 400),
    (json.dumps({"messages": [{"role": "user", "content": "no image"}]}).encode(), "application/json", 400),
    (json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest"}}]}]}).encode(),
     "application/json", 400),
    (json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}]}).encode(),
     "application/json", 400),  # valid base64 of "hello": not an image
    (b"messages=1", "application/x-www-form-urlencoded", 415),
])
def test_malformed_chat_requests_are_4xx(server, body, ctype, status):
    r = server.post("/v1/chat/completions", data=body, headers={**server.auth, "Content-Type": ctype})
    assert r.status_code == status, r.text
    assert r.json()["error"]


# --- batching, metrics, logs --------------------------------------------------------------------------

def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def test_concurrent_requests_share_forward_passes(server):
    before = server.get("/metrics").text
    images = [png_bytes(scene(seed)) for seed in range(8)]
    barrier = threading.Barrier(len(images))

    def one(data):
        barrier.wait()
        t0 = time.perf_counter()
        r = server.analyze(data, params={"retrieval": "false"})
        return r, time.perf_counter() - t0

    with ThreadPoolExecutor(len(images)) as pool:
        results = list(pool.map(one, images))
    for r, _ in results:
        assert r.status_code == 200, r.text
        SafetyReport.model_validate(r.json())
    sizes = [int(r.headers["x-safetyvlm-batch-size"]) for r, _ in results]
    lat = sorted(t for _, t in results)
    print(f"\n8 concurrent /analyze: batch sizes {sizes}, latency min {lat[0] * 1000:.0f} ms, "
          f"max {lat[-1] * 1000:.0f} ms")
    assert max(sizes) > 1, f"no request was batched: {sizes}"
    after = server.get("/metrics").text
    passes = _metric(after, "safetyvlm_batch_size_count") - _metric(before, "safetyvlm_batch_size_count")
    images_seen = _metric(after, "safetyvlm_batch_size_sum") - _metric(before, "safetyvlm_batch_size_sum")
    assert images_seen == len(images) and passes < len(images)
    assert "safetyvlm_batch_size_bucket" in after


def test_model_calls_in_flight_survive_many_other_calls(server):
    """BentoML's client to the model process used to renew its session every 100 calls (and 300 s) by
    closing it with calls in flight: each was dropped and resent (the model analysed it twice), or answered
    503 when dropped while its answer was being read (tests/test_serve_load.py at concurrency 32), and the
    call that renewed it could hang (a /readyz here, > 30 s). A /readyz probes the model process through the
    same client, so 150 of them while 16 analyses wait there cross any such boundary: each probe answers,
    each analysis answers 200, and the model sees each image once."""
    before = server.get("/metrics").text
    images = [png_bytes(scene(seed)) for seed in range(16)]
    with ThreadPoolExecutor(len(images)) as analyses, ThreadPoolExecutor(4) as probes:
        answers = [analyses.submit(server.analyze, data, params={"retrieval": "false"}) for data in images]
        time.sleep(0.5)  # the analyses reach the model process (batches of 8: two passes or more)
        list(probes.map(lambda _: requests.get(server.url + "/readyz", timeout=30), range(150)))
        still_running = sum(not a.done() for a in answers)
        answers = [a.result() for a in answers]
    print(f"\n150 /readyz done with {still_running} of {len(images)} analyses still in flight")
    for r in answers:
        assert r.status_code == 200, r.text
    after = server.get("/metrics").text
    images_seen = _metric(after, "safetyvlm_batch_size_sum") - _metric(before, "safetyvlm_batch_size_sum")
    assert images_seen == len(images), f"the model analysed {images_seen} images for {len(images)} requests"


def test_metrics_count_refusals(server):
    server.post("/analyze", data=b"", headers={**server.auth, "Content-Type": "image/png"})
    text = server.get("/metrics").text
    assert _metric(text, 'safetyvlm_rejected_requests_total{reason="empty"}') >= 1
    assert "bentoml_api_server_request_total" in text or "bentoml_service_request_total" in text


# --- the dashboard in a real browser ------------------------------------------------------------------

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]


def test_dashboard_draws_boxes_and_cards(server, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no system chromium (apt-get install -y chromium; `make test` installs it when it can)")
    from playwright.sync_api import sync_playwright

    photo = tmp_path / "bench.png"
    scene(9).save(photo)
    # retrieval off: the page is under test, not the model's answers with passages (eval's "+ RAG" rows)
    expected = server.analyze(photo.read_bytes(), params={"retrieval": "false", "max_tools": "10"}).json()
    assert expected["tools"]
    foreign = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda req: req.url.startswith(server.url) or req.url.startswith(("blob:", "data:"))
                    or foreign.append(req.url))
            page.goto(server.url + "/")
            page.wait_for_selector("#auth", state="visible")  # no cookie yet: the page asks for the token
            page.fill("#token", TOKEN)
            page.click("#auth button")
            page.wait_for_selector("#auth", state="hidden")
            page.wait_for_selector("body[data-access=ok]")
            page.uncheck("#retrieval")
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("body[data-state=done]", timeout=60_000)
            boxes = page.eval_on_selector_all(
                "#boxes rect.box", "rs => rs.map(r => ['x','y','width','height'].map(a => +r.getAttribute(a)))")
            cards = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.tool)")
            viewbox = page.get_attribute("#boxes", "viewBox")
            first_card = page.inner_text(".card")
            status = page.inner_text("#status")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\ndashboard screenshot: {shot}")
            # a photo dropped on the drop zone goes through the same path
            page.evaluate("document.body.dataset.state = ''")
            page.evaluate("""async (b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
                document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
            }""", base64.b64encode(png_bytes(scene(3, (448, 300)))).decode())
            page.wait_for_selector("body[data-state=done]", timeout=60_000)
            dropped = (page.get_attribute("#boxes", "viewBox"), page.locator("#boxes rect.box").count(),
                       page.locator(".card").count())
        finally:
            browser.close()
    assert not foreign, f"the page loaded something from elsewhere: {foreign}"
    assert viewbox == "0 0 224 224"
    assert cards == [t["name"] for t in expected["tools"]]
    assert len(boxes) == len(expected["tools"])
    for (x, y, w, h), t in zip(boxes, expected["tools"]):
        x1, y1, x2, y2 = t["bbox_2d"]
        assert (x, y) == (x1, y1) and abs(w - max(x2 - x1, 1)) < 1e-6 and abs(h - max(y2 - y1, 1)) < 1e-6
    for heading in ("Primary function", "Required PPE", "Hazards", "Common misuses", "Sources"):
        assert heading.upper() in first_card.upper()
    assert expected["tools"][0]["sources"] and expected["tools"][0]["sources"][0] in first_card
    assert f"confidence {expected['tools'][0]['score']:.2f}" in first_card
    assert f"{len(expected['tools'])} tool(s)" in status
    assert dropped[0] == "0 0 448 300" and dropped[1] == dropped[2] >= 1


def model_worker(arbiter_pid: int) -> int:
    """The pid of the `bentoml serve` child that holds the model (a process this module started)."""
    for pid, ppid, cmd in processes():
        if ppid == arbiter_pid and b"--service-name safetyvlm-model" in cmd:
            return pid
    raise LookupError("no model worker under the server")


def test_a_dead_model_process_is_a_503_then_the_service_recovers(server):
    """Runs late: it kills the model process. BentoML's supervisor restarts it; meanwhile a request either
    waits for it (the client to the model process retries) or gets a clean, retryable 503 — never a
    500 — and the same request succeeds again."""
    os.kill(model_worker(server.proc.pid), signal.SIGKILL)
    assert requests.get(server.url + "/livez", timeout=10).status_code == 200   # the API server is alive
    try:  # but not ready without its model (reloading takes seconds: torch alone imports for longer)
        ready = requests.get(server.url + "/readyz", timeout=3).status_code
    except requests.Timeout:
        ready = None
    assert ready != 200
    png = png_bytes(scene())
    statuses = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 90:
        r = server.analyze(png, params={"retrieval": "false"})
        statuses.append(r.status_code)
        if r.status_code == 200:
            break
        assert r.status_code == 503 and r.json()["reason"] == "model_unavailable", r.text
        time.sleep(0.5)
    print(f"\nafter killing the model process: {statuses} in {time.perf_counter() - t0:.1f} s")
    assert statuses[-1] == 200 and SafetyReport.model_validate(r.json())


def test_secrets_never_reach_the_log(server):
    assert_answers_again(server)
    log = server.log.read_text(errors="replace")
    assert "analyzer ready" in log or "initialized" in log
    assert TOKEN not in log
