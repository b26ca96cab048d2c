"""Images rendered per second by the procedural renderer (safetyvlm.data.render).

    python benchmarks/render_speed.py                      # 224x224, 500 images, one process
    python benchmarks/render_speed.py --workers 4          # also with 4 worker processes
    python benchmarks/render_speed.py --size 112 --count 2000 --no-jpeg

Rendering only (PIL image + boxes in memory), no PNG encoding or disk I/O.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

from safetyvlm.data.render import RenderConfig, render_examples, warm_caches

_CFG: RenderConfig | None = None


def _init(cfg: RenderConfig) -> None:
    global _CFG
    _CFG = cfg
    warm_caches(cfg)


def _chunk(args: tuple[int, int, int]) -> int:
    start, n, seed = args
    for _ in render_examples(n, seed, _CFG, start=start):
        pass
    return n


def run_single(cfg: RenderConfig, count: int, seed: int) -> float:
    warm_caches(cfg)
    list(render_examples(min(20, count), seed + 1, cfg))
    t0 = time.perf_counter()
    for _ in render_examples(count, seed, cfg):
        pass
    return count / (time.perf_counter() - t0)


def run_pool(cfg: RenderConfig, count: int, seed: int, workers: int, chunk: int = 25) -> float:
    jobs = [(s, min(chunk, count - s), seed) for s in range(0, count, chunk)]
    with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(cfg,)) as pool:
        pool.map(_chunk, [(0, 10, seed + 1)] * workers)  # warm up every worker
        t0 = time.perf_counter()
        done = sum(pool.imap_unordered(_chunk, jobs))
        dt = time.perf_counter() - t0
    return done / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224, help="square image size in pixels (default 224)")
    ap.add_argument("--width", type=int, help="image width (overrides --size)")
    ap.add_argument("--height", type=int, help="image height (overrides --size)")
    ap.add_argument("--count", type=int, default=500, help="images per measurement (default 500)")
    ap.add_argument("--workers", type=int, default=0, help="also measure with N worker processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tools", type=int, default=3)
    ap.add_argument("--no-jpeg", action="store_true", help="skip the JPEG round trip")
    args = ap.parse_args()

    cfg = RenderConfig(
        width=args.width or args.size,
        height=args.height or args.size,
        max_tools=args.max_tools,
        jpeg_quality_range=None if args.no_jpeg else (40, 95),
    )
    print(f"renderer: {cfg.width}x{cfg.height}, 1-{cfg.max_tools} tools, clutter<={cfg.clutter}, "
          f"jpeg={'off' if args.no_jpeg else 'on'}; {os.cpu_count()} CPUs visible")
    ips = run_single(cfg, args.count, args.seed)
    print(f"single process: {ips:8.1f} images/s  ({1000 / ips:.2f} ms/image)")
    if args.workers > 0:
        ips_n = run_pool(cfg, args.count, args.seed, args.workers)
        print(f"{args.workers} workers:     {ips_n:8.1f} images/s  ({ips_n / args.workers:.1f} per worker)")


if __name__ == "__main__":
    main()
