"""The measured figures in docs/*.md, generated from the files the benchmarks write (never copied by hand).

A page marks each generated block:

    <!-- figures: load -->
    ... (this script's output; edit the prose around it, never inside it)
    <!-- /figures -->

`python benchmarks/docs_figures.py` rewrites every block of every page under docs/ from
benchmarks/results/; `--check` exits 1 when a page differs from what the results give
(tests/test_docs_figures.py runs it). Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- figures: ([a-z0-9-]+) -->\n)(.*?)(<!-- /figures -->)", re.S)


def _read(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _cell(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(v, ci=None) -> str:
    out = f"{100 * v:.1f}%"
    return out + (f" ({100 * ci[0]:.1f}–{100 * ci[1]:.1f})" if ci else "")


def _statuses(by_status: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items()))


def load() -> str:
    d = _read("load.json")
    rows = [[lv["concurrency"], lv["requests"], lv["throughput_rps"], lv["valid_rps"], lv["p50_ms"], lv["p95_ms"],
             lv["p99_ms"], _statuses(lv["by_status"]), lv["connection_failures"], lv["server_errors"],
             f"{lv.get('valid_schema_ok')} / {lv.get('valid_requests')}"] for lv in d["levels"]]
    table = _table(["concurrency", "requests", "req/s", "valid req/s", "p50 ms", "p95 ms", "p99 ms", "answers by status",
                    "conn. failures", "5xx", "schema-valid / valid"], rows)
    on, off, inter = d["batching_on"], d["batching_off"], d["interleaved"]
    rss = d["peak_rss_mb"]
    return (f"From `benchmarks/results/load.json` ({d['machine']}; `max_new_tokens` {d['max_new_tokens']}):\n\n{table}\n\n"
            f"- Adaptive batching, valid images at concurrency {on['concurrency']}: {on['throughput_rps']} req/s on vs "
            f"{off['throughput_rps']} off (`max_batch_size 1`): **{d['batching_speedup']}x**.\n"
            f"- Service overhead, one image at concurrency 1, batching off ({inter['requests']} interleaved rounds): "
            f"p50 {inter['service_p50_ms']} ms over HTTP vs {inter['bare_p50_ms']} ms in-process: "
            f"**+{100 * inter['overhead']:.1f}%**.\n"
            f"- Peak RSS of the server's {rss['processes']} processes: {rss['total']} MB (model worker "
            f"{rss['model_worker']} MB).")


def soak() -> str:
    d = _read("soak.json")
    return (f"From `benchmarks/results/soak.json`: {d['seconds']} s at {d['rate_rps']} req/s (open loop): "
            f"{d['requests']} requests, {d['errors']} errors ({_statuses(d['by_status'])}); RSS "
            f"{d['rss_mb_after_warmup']} MB after warm-up, {d['rss_mb_last']} MB at the end "
            f"(growth {d['rss_growth_after_warmup_mb']} MB), peak {d['peak_rss_mb']} MB.")


def rag_latency() -> str:
    d = _read("rag_latency_cpu.json")
    rows = [[r["name"], r["p50_ms"], r["p99_ms"], r["n"]] for r in d["results"] if "p50_ms" in r]
    share = next((r for r in d["results"] if "share_p50" in r), None)
    tail = (f"\n\nRetrieval is {_pct(share['share_p50'])} of an answer with retrieval (p50; model "
            f"`{share['model']}`): the second pass, with the passages in its prompt, is what retrieval costs."
            if share else "")
    return (f"From `benchmarks/results/rag_latency_cpu.json` ({d['chunks']:,} chunks, top {d['k']}):\n\n"
            + _table(["step", "p50 ms", "p99 ms", "runs"], rows) + tail)


def generation_cpu() -> str:
    d = _read("generation_cpu.json")
    rows = [[r["family"], r["cache"], r["batch_size"], "yes" if r.get("pruned", False) else "no",
             r["seconds_per_image"], f"{r['same_answers_as_first']} / {r['images']}"] for r in d["runs"]]
    return (f"From `benchmarks/results/generation_cpu.json` ({d['date']}, {d['cores']} CPU cores; the finetuned "
            "language LoRA of each family on the first test images, report prompt, greedy, 400 new tokens at most; same "
            "answers: how many are, token for token, the family's first setting's; finished answers leave the batch: "
            "`generate_pruned`, or the whole batch decodes until its longest answer ends):\n\n"
            + _table(["family", "KV cache", "batch", "finished answers leave", "s / image", "same answers"], rows))


def repro_time() -> str:
    d = _read("repro_time.json")
    rows = [[name, f"{s / 60:.1f}"] for name, s in d["stages"].items()]
    verdict = "met" if d["graph_s"] <= d["goal_s"] else f"missed by {(d['graph_s'] - d['goal_s']) / 60:.1f} min"
    skipped = f"; up to date, not run: {', '.join(d['skipped'])}" if d["skipped"] else ""
    return (f"From `benchmarks/results/repro_time.json` ({d['date']}, {d['cores']} CPU cores; "
            "`benchmarks/dvc_noop.py --log LOG --runs 0 --save` on a log recorded around `make repro`"
            f"{skipped}): the graph took {d['graph_s'] / 60:.1f} min, goal <= {d['goal_s'] / 60:.0f} min: "
            f"{verdict}.\n\n" + _table(["stage", "minutes"], rows))


def poisoning() -> str:
    d = _read("rag_poisoning_cpu.json")
    rows = []
    for name, c in d["conditions"].items():
        parts = c["model"] if "flip_rate" not in c and "model" in c else c
        rows.append([name, c["answers_with_a_planted_passage_in_prompt"], parts["flips"],
                     _pct(parts["flip_rate"], parts.get("flip_rate_ci95")), parts.get("flips_with_changed_names"),
                     parts.get("poison_phrase_answers")])
    table = _table(["retriever + answer", "prompts with a planted passage", "flips", "flip rate (95% CI)",
                    "of which names changed", "answers with a poison phrase"], rows)
    return (f"From `benchmarks/results/rag_poisoning_cpu.json`: model sha256 `{d['model_sha256']}`, "
            f"{d['images']} test images, {d['planted_passages']} planted passages; the service default is "
            f"`{d['service_default']}`; goal: flip rate ≤ {_pct(d['goal_flip_rate'])}.\n\n{table}")


def injection() -> str:
    rows = []
    for name in ("visual_injection_cpu.json", "visual_injection_rag_cpu.json"):
        d = _read(name)
        for answer, a in d["answers"].items():
            rows.append([f"retrieval {'on' if d['retrieval'] else 'off'}, {answer}", d["scenes"],
                         _pct(a["success_rate"], a["success_rate_ci95"]), _pct(a["control_rate"], a["control_rate_ci95"]),
                         f"{100 * a['excess']:+.1f} pt ({100 * a['excess_ci95'][0]:+.1f} to {100 * a['excess_ci95'][1]:+.1f})",
                         a["by_reason"]["attack"]["attack_text_in_fields"]])
    table = _table(["condition", "scenes", "attack success (95% CI)", "blank-strip control", "excess (paired 95% CI)",
                    "attack text in safety fields"], rows)
    d = _read("visual_injection_cpu.json")
    return (f"From `benchmarks/results/visual_injection_cpu.json` and `visual_injection_rag_cpu.json`: model sha256 "
            f"`{d['model_sha256']}`; goal: success ≤ {_pct(d['goal'])}.\n\n{table}")


def _gpu_rows(name: str) -> list[dict]:
    return [r for r in _read(name)["rows"] if r.get("ok") and r["config"] not in ("build", "matmul")]


def gpu_train(card: str) -> str:
    name = f"gpu_real_path_{card}.json"
    d = _read(name)
    # a configuration measured again in a later call (other code, other sample lengths) keeps both rows
    rows = [[r["family"], r["config"], r.get("call"), r.get("backend") or "hf", r.get("batch"), r.get("s_per_step"),
             r.get("tokens_per_s"), None if r.get("mfu") is None else _pct(r["mfu"]), r.get("peak_alloc_gib")]
            for r in _gpu_rows(name) if r["config"].startswith(("train:", "dpo:", "grpo:"))]
    table = _table(["family", "run", "call", "backend", "batch", "s / step", "tokens / s", "MFU", "peak GiB"], rows)
    matmul = d["matmul_tflops_bf16_8192"]
    if isinstance(matmul, list):
        matmul = max(m["tflops"] if isinstance(m, dict) else m for m in matmul)
    return (f"From `benchmarks/results/{name}` ({d['card']}; bf16 matmul {matmul} TFLOP/s at 8192²), full-size "
            f"random-init checkpoints:\n\n{table}")


def gpu_generate(card: str) -> str:
    name = f"gpu_real_path_{card}.json"
    rows = [[r["family"], r["config"], r.get("call"), r.get("batch"), r.get("tokens_per_s"),
             r.get("decode_tokens_per_s"), r.get("ms_per_image"), r.get("peak_alloc_gib")]
            for r in _gpu_rows(name) if r["config"].startswith(("gen:", "analyze:"))]
    return (f"From `benchmarks/results/{name}` (greedy decoding; `analyze` = the service's own `Analyzer` "
            "in-process):\n\n" + _table(["family", "run", "call", "batch", "tokens / s", "decode tokens / s",
                                         "ms / image", "peak GiB"], rows))


def ddp() -> str:
    rows = []
    for path in sorted(RESULTS.glob("ddp_scaling_*.json")):
        for r in json.loads(path.read_text())["runs"]:
            rows.append([path.stem.removeprefix("ddp_scaling_"), r.get("device"), r["world_size"], r.get("mode", "ddp"),
                         r.get("quant", "bf16"), r["per_rank_batch"], r["s_per_step"], r["samples_per_s"],
                         r.get("peak_gib"), None if r.get("efficiency") is None else _pct(r["efficiency"])])
    return ("From `benchmarks/results/ddp_scaling_*.json` (the vision+language LoRA, full-size random-init "
            "Qwen2.5-VL-7B; scaling efficiency = samples/s ÷ (world size × one GPU's)):\n\n"
            + _table(["file", "device", "GPUs", "mode", "weights", "batch / GPU", "s / step", "samples / s", "peak GiB",
                      "efficiency"], rows))


def load_compare(name: str, model: str) -> str:
    d = _read(name)
    rows = [[c["concurrency"], c["requests"], c["service_rps"], c["service_p50_ms"], c["service_p95_ms"],
             c.get("service_mean_batch"), c.get("in_process_rps"), c.get("in_process_p50_ms"),
             c.get("in_process_p95_ms"), None if c.get("overhead") is None else f"{100 * c['overhead']:+.1f}%"]
            for c in d["compare"]]
    note = f" Not measured: {d['note']}." if d.get("note") else ""
    return (f"From `benchmarks/results/{name}` ({d['date']}, {d['card']}; {model}, {d['model']['cache']} cache, "
            f"{d['max_new_tokens']} new tokens; {d['software']}; batcher: {d.get('batcher', 'BentoML')}; "
            f"`{d['command']}`). Overhead = in-process images/s ÷ service images/s − 1; mean batch: images per "
            f"forward pass in the service (– where not recorded).{note}\n\n"
            + _table(["concurrency", "requests", "service images / s", "p50 ms", "p95 ms", "mean batch",
                      "in-process images / s", "p50 ms", "p95 ms", "overhead"], rows))


BLOCKS = {"load": load, "load-gpu": lambda: load_compare("load_gpu_h100.json", "full-size random-init Qwen2.5-VL-7B"),
          "load-gpu-own-batcher": lambda: load_compare("load_gpu_h100_own_batcher.json",
                                                       "full-size random-init Qwen2.5-VL-7B"),
          "load-compare-cpu": lambda: load_compare("load_compare_cpu.json", "the shipped tiny Qwen base"),
          "load-compare-cpu-own-batcher": lambda: load_compare("load_compare_cpu_own_batcher.json",
                                                               "the shipped tiny Qwen base"),
          "load-compare-cpu-own-batcher-full": lambda: load_compare("load_compare_cpu_own_batcher_full.json",
                                                                    "the shipped tiny Qwen base"),
          "soak": soak, "rag-latency": rag_latency, "poisoning": poisoning, "injection": injection,
          "gpu-train-h100": lambda: gpu_train("h100"), "gpu-train-h200": lambda: gpu_train("h200"),
          "gpu-generate-h100": lambda: gpu_generate("h100"), "gpu-generate-h200": lambda: gpu_generate("h200"),
          "ddp": ddp, "generation-cpu": generation_cpu, "repro-time": repro_time}


def render(text: str, where: str = "") -> str:
    def fill(m: re.Match) -> str:
        name = m.group(2)
        if name not in BLOCKS:
            raise KeyError(f"{where}: unknown figures block {name!r}; known: {sorted(BLOCKS)}")
        return m.group(1) + BLOCKS[name]() + "\n" + m.group(4)

    return BLOCK.sub(fill, text)


def pages(docs: Path = ROOT / "docs") -> list[Path]:
    return sorted(p for p in docs.glob("*.md") if BLOCK.search(p.read_text(encoding="utf-8")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a page differs from the results")
    args = ap.parse_args(argv)
    stale = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        new = render(text, str(page))
        if new != text:
            stale.append(page)
            if not args.check:
                page.write_text(new, encoding="utf-8")
    for page in stale:
        print(f"{page.relative_to(ROOT)}: {'differs from benchmarks/results/' if args.check else 'regenerated'}",
              file=sys.stderr if args.check else sys.stdout)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
