"""Load test of the real service: `bentoml serve` on 127.0.0.1, driven by locust (headless).

    python benchmarks/load_test.py                 # the full run (README figures), a few minutes on 2 cores
    python benchmarks/load_test.py --quick         # what the test runs (tests/test_serve_load.py)
    python benchmarks/load_test.py --device cuda --cache static --model DIR   # the service on a GPU

Phases, each against a fresh server with the shipped tiny model (`max_new_tokens` fixed, torch_threads=1):
  mix       adaptive batching on (max_batch_size 32): a round-robin mix of valid images and every bad-input
            kind at concurrency 1, 8 and 32, a fixed number of requests each. Throughput, p50/p95/p99,
            answers by status, connection failures, 5xx, schema failures, peak RSS of the server processes.
  batching  valid images only at concurrency 32: the same service with batching on vs off (max_batch_size 1).
  overhead  one image at concurrency 1: p50 of /analyze (batching off) vs p50 of the bare in-process model
            call (decode + Analyzer.analyze, what the model process does) on the same image, one of each in
            turn; and the locust p50 at concurrency 1 with adaptive batching on, for comparison.
With --compare, only this (the GPU benchmark of issue 22): valid images through /analyze at concurrency 1, 8
and 32 against the same model in-process answering batches of 1, 8 and 32; images/s, p50/p95, overhead.
Prints a table and writes benchmarks/results/load.json (--out).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from safetyvlm.model.generate import CACHES
from safetyvlm.serve.launch import ROOT, TINY, ServeProcess, serve_env

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
MAX_BODY = 300_000
MAX_PIXELS = 1_000_000
MAX_NEW_TOKENS = 64
SERVED = {"model": str(TINY), "device": "auto", "cache": "dynamic"}  # what run() serves unless told


def encode(im: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def valid_images() -> dict[str, tuple[bytes, str]]:
    """Rendered bench scenes (PNG) and real photos from tests/fixtures (JPEG, downscaled to 320 px)."""
    from safetyvlm.data.render import render_scene

    out = {f"scene{s}": (encode(render_scene(s)[0]), "image/png") for s in (1, 3, 5)}
    photos = sorted((ROOT / "tests" / "fixtures" / "real-tools").glob("*/images/*.jpg"))[:2]
    for i, path in enumerate(photos):
        im = Image.open(path).convert("RGB")
        im.thumbnail((320, 320))
        out[f"photo{i}"] = (encode(im, "JPEG"), "image/jpeg")
    return out


def bad_inputs() -> dict[str, tuple[bytes, str, int, str]]:
    """Every kind of bad input: name -> (body, content type, expected status, how it is sent)."""
    import numpy as np
    from safetyvlm.data.render import render_scene

    png = encode(render_scene(3)[0])
    noise = np.random.default_rng(0).integers(0, 255, (340, 340, 3), dtype=np.uint8)
    return {
        "not_an_image": (b"%PDF-1.7 definitely not a picture", "image/png", 400, "multipart"),
        "empty": (b"", "image/png", 400, "raw"),
        "truncated_png": (png[:1500], "image/png", 400, "multipart"),
        "truncated_jpeg": (encode(render_scene(3)[0], "JPEG")[:900], "image/jpeg", 400, "raw"),
        "unsupported_format": (encode(render_scene(3)[0], "TGA"), "image/x-tga", 415, "multipart"),
        "too_many_pixels": (encode(Image.new("RGB", (1200, 1000))), "image/png", 413, "raw"),
        "body_too_large": (encode(Image.fromarray(noise)), "image/png", 413, "multipart"),
        "wrong_content_type": (b"hello", "text/plain", 415, "raw"),
        "malformed_multipart": (b"--xyz\r\nnot really multipart", "multipart/form-data; boundary=xyz", 400, "raw"),
        "aspect_1x10000": (encode(Image.new("RGB", (1, 10000), (90, 90, 90))), "image/png", 422, "multipart"),
    }


def write_payloads(folder: Path, valid_only=False, only: str | None = None) -> Path:
    """manifest.json + one file per payload: valid and bad interleaved, so every window of the run is a mix."""
    folder.mkdir(parents=True, exist_ok=True)
    valid = [{"name": k, "kind": "valid", "ctype": c, "status": 200, "how": "multipart" if i % 2 else "raw",
              "data": d} for i, (k, (d, c)) in enumerate(valid_images().items()) if only in (None, k)]
    bad = [] if valid_only else [{"name": k, "kind": k, "ctype": c, "status": s, "how": how, "data": d}
                                 for k, (d, c, s, how) in bad_inputs().items()]
    order = []
    for i in range(max(len(valid), len(bad))):
        if valid:
            order.append(valid[i % len(valid)])
        if i < len(bad):
            order.append(bad[i])
    manifest = []
    for i, p in enumerate(order):
        name = f"{i:03d}-{p['name']}"
        p = dict(p)
        (folder / name).write_bytes(p.pop("data"))
        manifest.append({**p, "file": name})
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder / "manifest.json"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * len(v) + 0.5) - 1))]  # nearest rank


def run_locust(url: str, manifest: Path, users: int, requests_: int, workdir: Path, time_limit: int,
               token: str | None = None) -> dict:
    """One headless locust run; returns the summary of its records."""
    out = workdir / f"records-{users}-{time.monotonic_ns()}.json"
    env = serve_env(workdir, LOAD_PAYLOADS=manifest, LOAD_REQUESTS=requests_, LOAD_OUT=out,
                    LOAD_TOKEN=token or "")
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users),
           "-r", str(users), "-t", f"{time_limit}s", "--host", url, "--only-summary", "--loglevel", "WARNING"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=time_limit + 120)
    if not out.exists():
        raise RuntimeError(f"locust wrote no records (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return summarize(json.loads(out.read_text()), users)


def summarize(records: list[dict], users: int) -> dict:
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    lat = [(r["end"] - r["start"]) * 1000 for r in records]
    valid = [r for r in records if r["kind"] == "valid"]
    vlat = [(r["end"] - r["start"]) * 1000 for r in valid]
    span = (max(r["end"] for r in records) - min(r["start"] for r in records)) if records else float("nan")
    return {
        "concurrency": users, "requests": len(records), "seconds": round(span, 2),
        "throughput_rps": round(len(records) / span, 2), "valid_rps": round(len(valid) / span, 2),
        "p50_ms": round(pct(lat, 50), 1), "p95_ms": round(pct(lat, 95), 1), "p99_ms": round(pct(lat, 99), 1),
        "valid_p50_ms": round(pct(vlat, 50), 1), "valid_p95_ms": round(pct(vlat, 95), 1),
        "valid_p99_ms": round(pct(vlat, 99), 1),
        "by_status": dict(sorted(statuses.items())),
        "connection_failures": statuses.get("0", 0),
        "server_errors": sum(n for s, n in statuses.items() if s.startswith("5")),
        "valid_requests": len(valid),
        "valid_schema_ok": sum(1 for r in valid if r["ok"]),
        "unexpected": sorted({f"{r['name']}: {r['status']} {r['detail']}".strip() for r in records if not r["ok"]}),
    }


class BareModel:
    """What the model process does for one request, in this process: decode + Analyzer.analyze."""

    def __init__(self, model: str, device: str, cache: str):
        import torch

        from safetyvlm.serve.analyzer import Analyzer
        from safetyvlm.serve.config import ServeConfig

        torch.set_num_threads(1)  # as the service (SAFETYVLM_TORCH_THREADS=1)
        self.analyzer = Analyzer(ServeConfig(model=model, torch_threads=1, max_new_tokens=MAX_NEW_TOKENS,
                                             rag=None, device=device, cache=cache))

    def __call__(self, *images: bytes) -> float:
        """Decode `images` and answer them in one batch (as the adaptive batcher hands them over); ms."""
        from safetyvlm.serve.images import decode_image

        t0 = time.perf_counter()
        ims = [decode_image(image, max_bytes=MAX_BODY, max_pixels=MAX_PIXELS) for image in images]
        self.analyzer.analyze(ims, [False] * len(ims), [None] * len(ims))
        return (time.perf_counter() - t0) * 1000


def batch_counts(url: str) -> tuple[float, float]:
    """(forward passes, images) so far, from the service's `safetyvlm_batch_size` histogram in /metrics."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for family in text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text)
               for s in family.samples]
    return tuple(sum(s.value for s in samples if s.name == f"safetyvlm_batch_size_{k}") for k in ("count", "sum"))


def compare(levels: dict[int, int], workdir: Path, time_limit: int = 300, log=print, **served) -> dict:
    """The service against the same model in-process, valid images only, at each concurrency c of `levels`
    (c -> requests): through `/analyze` (adaptive batching, max batch 32) with c clients, and in-process
    as batches of c images (the best the batcher can do). Latency in-process = its batch's time; service
    overhead = in-process images/s / service images/s - 1; the service's mean batch from its /metrics."""
    served = {**SERVED, **served}
    valid = write_payloads(workdir / "valid", valid_only=True)
    manifest = json.loads(valid.read_text())
    images = [(valid.parent / m["file"]).read_bytes() for m in manifest]
    rows = []
    with ServeProcess(workdir, workdir / "compare.log", **server_settings(32, **served)) as srv:
        log(f"server ready in {srv.ready_seconds:.1f} s")
        for users in levels:  # warm every batch shape first (a static cache compiles per shape)
            run_locust(srv.url, valid, users, 2 * users, workdir, time_limit)
        for users, n in levels.items():
            before = batch_counts(srv.url)
            s = run_locust(srv.url, valid, users, n, workdir, time_limit)
            passes, images_seen = (a - b for a, b in zip(batch_counts(srv.url), before))
            rows.append({"concurrency": users, "requests": s["requests"], "service_rps": s["valid_rps"],
                         "service_p50_ms": s["valid_p50_ms"], "service_p95_ms": s["valid_p95_ms"],
                         "service_errors": s["requests"] - s["valid_schema_ok"],
                         "service_mean_batch": round(images_seen / passes, 2) if passes else None})
            log(json.dumps(rows[-1]))
    bare = BareModel(**served)
    for row in rows:
        c = row["concurrency"]
        rounds = max(3, row["requests"] // c)
        batches = [[images[(i * c + j) % len(images)] for j in range(c)] for i in range(rounds)]
        bare(*batches[0])  # warm-up of this shape
        times = [bare(*b) for b in batches]
        rate = c * len(times) / (sum(times) / 1000)
        row.update({"in_process_rps": round(rate, 2), "in_process_p50_ms": round(pct(times, 50), 1),
                    "in_process_p95_ms": round(pct(times, 95), 1),
                    "overhead": round(rate / row["service_rps"] - 1, 3)})
        log(json.dumps(row))
    return {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform(terse=True)}",
            "max_new_tokens": MAX_NEW_TOKENS, "model": served, "compare": rows}


def interleaved_overhead(url: str, image: bytes, n: int, **served) -> dict:
    """p50 of /analyze at concurrency 1 vs p50 of the bare call, alternating one of each, so that the load
    of other jobs on the machine weighs on both alike."""
    import requests

    bare, service, http = BareModel(**served), [], requests.Session()
    direct = []
    for i in range(n + 2):
        t0 = time.perf_counter()
        r = http.post(url + "/analyze", data=image, headers={"Content-Type": "image/png"},
                      params={"retrieval": "false"}, timeout=60)
        t = (time.perf_counter() - t0) * 1000
        assert r.status_code == 200, r.text
        b = bare(image)
        if i >= 2:  # two warm-up rounds
            service.append(t)
            direct.append(b)
    s50, b50 = statistics.median(service), statistics.median(direct)
    return {"requests": n, "service_p50_ms": round(s50, 1), "bare_p50_ms": round(b50, 1),
            "overhead": round(s50 / b50 - 1, 3)}


def server_settings(batch: int, model: str = SERVED["model"], device: str = SERVED["device"],
                    cache: str = SERVED["cache"]) -> dict:
    return dict(SAFETYVLM_MAX_NEW_TOKENS=MAX_NEW_TOKENS, SAFETYVLM_MAX_BATCH_SIZE=batch,
                SAFETYVLM_BATCH_WAIT_MS=50, SAFETYVLM_MAX_BODY_BYTES=MAX_BODY, SAFETYVLM_MAX_PIXELS=MAX_PIXELS,
                SAFETYVLM_RETRIEVAL_DEFAULT="false", SAFETYVLM_MODEL=model, SAFETYVLM_DEVICE=device,
                SAFETYVLM_CACHE=cache)


def run(levels: dict[int, int], batching_requests: int, overhead_requests: int, workdir: Path,
        time_limit: int = 240, log=print, **served) -> dict:
    """`served`: model, device and cache of the served model, over SERVED's."""
    served = {**SERVED, **served}
    mix = write_payloads(workdir / "mix")
    valid = write_payloads(workdir / "valid", valid_only=True)
    one = write_payloads(workdir / "one", valid_only=True, only="scene3")
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform(terse=True)}",
              "load_average_at_start": os.getloadavg(), "max_new_tokens": MAX_NEW_TOKENS, "levels": [],
              "model": served}
    with ServeProcess(workdir, workdir / "batch32.log", **server_settings(32, **served)) as srv:
        log(f"server (batching on) ready in {srv.ready_seconds:.1f} s; RSS {srv.rss_mb():.0f} MB")
        run_locust(srv.url, one, 1, 3, workdir, time_limit)  # warm-up
        for users, n in levels.items():
            s = run_locust(srv.url, mix, users, n, workdir, time_limit)
            s["rss_mb"] = round(srv.rss_mb())
            result["levels"].append(s)
            log(json.dumps(s))
        s = run_locust(srv.url, valid, 32, batching_requests, workdir, time_limit)
        result["batching_on"] = s
        log("batching on, c=32: " + json.dumps(s))
        s = run_locust(srv.url, one, 1, overhead_requests, workdir, time_limit)
        result["service_c1"] = s
        log("one image, c=1: " + json.dumps(s))
        mem = srv.memory()
        result["peak_rss_mb"] = {"total": round(sum(p for _, p in mem.values())),
                                 "model_worker": round(mem.get(srv.model_worker(), (0, 0))[1]),
                                 "processes": len(mem)}
    with ServeProcess(workdir, workdir / "batch1.log", **server_settings(1, **served)) as srv:
        run_locust(srv.url, one, 1, 3, workdir, time_limit)
        s = run_locust(srv.url, valid, 32, batching_requests, workdir, time_limit)
        result["batching_off"] = s
        log("batching off, c=32: " + json.dumps(s))
        s = run_locust(srv.url, one, 1, overhead_requests, workdir, time_limit)
        result["service_c1_batching_off"] = s
        log("one image, c=1, batching off: " + json.dumps(s))
        image = (Path(one).parent / json.loads(Path(one).read_text())[0]["file"]).read_bytes()
        result["interleaved"] = interleaved_overhead(srv.url, image, overhead_requests, **served)
        log("interleaved, c=1, batching off: " + json.dumps(result["interleaved"]))
    result["batching_speedup"] = round(result["batching_on"]["valid_rps"] / result["batching_off"]["valid_rps"], 2)
    # adaptive batching may hold a lone request for a moment hoping for batch-mates: report both servers
    result["bare_p50_ms"] = result["interleaved"]["bare_p50_ms"]
    result["service_p50_ms"] = result["service_c1"]["valid_p50_ms"]
    result["service_p50_ms_batching_off"] = result["interleaved"]["service_p50_ms"]
    result["overhead"] = round(result["service_p50_ms"] / result["bare_p50_ms"] - 1, 3)
    result["overhead_batching_off"] = result["interleaved"]["overhead"]
    return result


def md_table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join("–" if c is None else str(c) for c in r) + " |" for r in rows]


def table(r: dict) -> str:
    rows = md_table(["concurrency", "requests", "req/s", "valid req/s", "p50 ms", "p95 ms", "p99 ms",
                     "answers by status", "conn. failures", "5xx", "schema-valid / valid", "RSS MB"],
                    [[s["concurrency"], s["requests"], s["throughput_rps"], s["valid_rps"], s["p50_ms"], s["p95_ms"],
                      s["p99_ms"], ", ".join(f"{k}: {v}" for k, v in s["by_status"].items()),
                      s["connection_failures"], s["server_errors"], f"{s['valid_schema_ok']} / {s['valid_requests']}",
                      s["rss_mb"]] for s in r["levels"]])
    on, off = r["batching_on"], r["batching_off"]
    rows += ["", f"batching at concurrency 32 (valid images): on {on['valid_rps']} req/s (p50 {on['p50_ms']} ms), "
                 f"off {off['valid_rps']} req/s (p50 {off['p50_ms']} ms): {r['batching_speedup']}x",
             f"overhead at concurrency 1: bare model call p50 {r['bare_p50_ms']} ms; /analyze p50 "
             f"{r['service_p50_ms_batching_off']} ms with batching off ({r['overhead_batching_off'] * 100:+.1f}%), "
             f"{r['service_p50_ms']} ms with adaptive batching ({r['overhead'] * 100:+.1f}%)",
             f"peak RSS of the server processes: {r['peak_rss_mb']['total']} MB in {r['peak_rss_mb']['processes']} "
             f"(model worker {r['peak_rss_mb']['model_worker']} MB)",
             # results recorded before the model was a key (benchmarks/results/load.json) print without it
             *([f"model: {r['model']['model']} on {r['model']['device']}, {r['model']['cache']} cache"]
               if "model" in r else []),
             f"machine: {r['machine']}; load average at start {', '.join(f'{x:.1f}' for x in r['load_average_at_start'])}"]
    return "\n".join(rows)


def compare_table(r: dict) -> str:
    rows = md_table(["concurrency", "requests", "service images/s", "p50 ms", "p95 ms", "mean batch",
                     "in-process images/s", "p50 ms", "p95 ms", "overhead"],
                    [[c["concurrency"], c["requests"], c["service_rps"], c["service_p50_ms"], c["service_p95_ms"],
                      c.get("service_mean_batch"), c.get("in_process_rps"), c.get("in_process_p50_ms"),
                      c.get("in_process_p95_ms"), None if c.get("overhead") is None else f"{c['overhead'] * 100:+.1f}%"]
                     for c in r["compare"]])
    rows.append(f"model: {r['model']['model']} on {r['model']['device']}, {r['model']['cache']} cache; {r['machine']}")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the short version the test runs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    ap.add_argument("--model", default=SERVED["model"], help="a model directory or model-store tag to serve")
    ap.add_argument("--device", default=SERVED["device"], help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--cache", default=SERVED["cache"], choices=CACHES, help="the KV cache of generation")
    ap.add_argument("--compare", action="store_true",
                    help="only the service against the model in-process at concurrency 1, 8 and 32 (valid images)")
    args = ap.parse_args(argv)
    if args.compare:
        levels = {1: 12, 8: 48, 32: 128} if args.quick else {1: 40, 8: 160, 32: 384}
        with tempfile.TemporaryDirectory(prefix="safetyvlm-load-") as tmp:
            r = compare(levels, Path(tmp), model=args.model, device=args.device, cache=args.cache)
        print(compare_table(r))
    else:
        if args.quick:
            levels, nb, no = {1: 12, 8: 40, 32: 64}, 64, 16
        else:
            levels, nb, no = {1: 60, 8: 240, 32: 480}, 192, 40
        with tempfile.TemporaryDirectory(prefix="safetyvlm-load-") as tmp:
            r = run(levels, nb, no, Path(tmp), time_limit=90 if args.quick else 300, model=args.model,
                    device=args.device, cache=args.cache)
        print(table(r))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(r, indent=1))
    return r


if __name__ == "__main__":
    main()
