"""Soak test: the real service at a fixed request rate for a long time; errors and memory growth.

    python benchmarks/soak.py                         # 10 minutes at 4 requests/s (README figures)
    python benchmarks/soak.py --seconds 20            # what tests/test_serve_soak.py runs

Open loop: a request starts every 1/rate seconds whatever the previous ones do (a thread each), round-robin
over the valid images and every bad-input kind of benchmarks/load_test.py. Every 2 s the RSS of the server
processes is sampled. Passes when errors (connection failures, 5xx, a valid image without a schema-valid
report, a bad one without its 4xx) are < 0.1% and the RSS growth after the first minute's warm-up
(or the first quarter of a shorter run) stays under --max-growth-mb.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parent))
from load_test import bad_inputs, server_settings, valid_images  # noqa: E402

from safetyvlm.schema import SafetyReport  # noqa: E402
from safetyvlm.serve.launch import ROOT, ServeProcess  # noqa: E402


def payloads() -> list[dict]:
    valid = [{"name": k, "data": d, "ctype": c, "status": 200} for k, (d, c) in valid_images().items()]
    bad = [{"name": k, "data": d, "ctype": c, "status": s} for k, (d, c, s, _) in bad_inputs().items()]
    return [p for pair in zip(valid * 2, bad) for p in pair]  # valid, bad, valid, bad, ...


def one(url: str, p: dict) -> tuple[str, bool]:
    try:
        r = requests.post(url + "/analyze", data=p["data"], headers={"Content-Type": p["ctype"]},
                          params={"retrieval": "false"}, timeout=120)
    except requests.RequestException as e:
        return f"connection: {type(e).__name__}", False
    ok = r.status_code == p["status"]
    if ok and r.status_code == 200:
        try:
            SafetyReport.model_validate(r.json())
        except Exception:  # noqa: BLE001
            ok = False
    return str(r.status_code), ok


def soak(seconds: float, rate: float, workdir: Path, log=print) -> dict:
    items = payloads()
    results: list[tuple[float, str, bool]] = []
    lock = threading.Lock()
    with ServeProcess(workdir, workdir / "soak.log", **server_settings(8)) as srv:
        def fire(p):
            status, ok = one(srv.url, p)
            with lock:
                results.append((time.perf_counter(), status, ok))

        samples, threads = [], []
        t0 = time.perf_counter()
        i, next_sample = 0, t0
        while (now := time.perf_counter()) - t0 < seconds:
            if now >= next_sample:
                samples.append((round(now - t0, 1), round(srv.rss_mb(), 1)))
                next_sample += 2
            th = threading.Thread(target=fire, args=(items[i % len(items)],))
            th.start()
            threads.append(th)
            i += 1
            time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        for th in threads:
            th.join(timeout=150)
        samples.append((round(time.perf_counter() - t0, 1), round(srv.rss_mb(), 1)))
        peak = srv.peak_rss_mb()
    statuses: dict[str, int] = {}
    for _, s, _ in results:
        statuses[s] = statuses.get(s, 0) + 1
    errors = sum(1 for _, _, ok in results if not ok)
    warm = min(60.0, seconds / 4)
    after_warmup = [m for t, m in samples if t >= warm] or [samples[-1][1]]
    out = {"seconds": seconds, "rate_rps": rate, "requests": len(results), "sent": i,
           "errors": errors, "error_rate": round(errors / max(len(results), 1), 5),
           "by_status": dict(sorted(statuses.items())),
           "rss_mb_first": samples[0][1], "rss_mb_after_warmup": after_warmup[0], "rss_mb_last": samples[-1][1],
           "rss_growth_after_warmup_mb": round(max(after_warmup) - after_warmup[0], 1),
           "peak_rss_mb": round(peak), "samples": samples}
    log(json.dumps({k: v for k, v in out.items() if k != "samples"}))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--rate", type=float, default=4.0, help="requests per second (open loop)")
    ap.add_argument("--max-growth-mb", type=float, default=50)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "soak.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="safetyvlm-soak-") as tmp:
        r = soak(args.seconds, args.rate, Path(tmp))
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=1))
    ok = r["error_rate"] < 0.001 and r["rss_growth_after_warmup_mb"] <= args.max_growth_mb
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
