"""How much of retrieval's gain the preference-trained model keeps without retrieval (from metrics/detail/eval.json).

    python benchmarks/preference_gain.py            # after `dvc repro` (the eval stage)

For each family and metric:  gap = (fine-tuned + RAG) - (fine-tuned),  kept = (preference-trained) -
(fine-tuned),  recovered = kept / gap. For the hallucination rate lower is better, so the signs flip.
The target is recovered >= 80% on safety-field accuracy and hallucination rate at single-pass latency.
A gap <= 0 means retrieval did not help that metric: there is nothing to recover, and the script says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# (metric key in eval.json, label, higher is better)
METRICS = (("safety_agreement", "safety-field accuracy", True),
           ("claim_hallucination", "claim hallucination", False),
           ("object_hallucination", "object hallucination", False),
           ("json_valid", "JSON valid", True),
           ("f1", "detection F1", True))


def recovery(ft: float | None, rag: float | None, final: float | None, higher_better: bool) -> dict:
    if None in (ft, rag, final):
        return {"gap": None, "kept": None, "recovered": None}
    sign = 1.0 if higher_better else -1.0
    gap, kept = sign * (rag - ft), sign * (final - ft)
    return {"gap": gap, "kept": kept, "recovered": kept / gap if gap > 1e-9 else None}


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval", type=Path, default=Path("metrics/detail/eval.json"))
    ap.add_argument("--finetuned", default="ft vision+language")
    ap.add_argument("--rag", default="ft vision+language + RAG")
    ap.add_argument("--final", default="preference-trained")
    ap.add_argument("--target", type=float, default=0.8)
    args = ap.parse_args()
    doc = json.loads(args.eval.read_text())
    out = {}
    for family, conds in doc.items():
        missing = [c for c in (args.finetuned, args.rag, args.final) if c not in conds]
        if missing:
            print(f"{family}: no condition(s) {missing} in {args.eval}")
            continue
        ft, rag, final = conds[args.finetuned], conds[args.rag], conds[args.final]
        print(f"\n{family}  ({ft['n_images']} test images)")
        print(f"{'metric':<24}{'fine-tuned':>12}{'+ RAG':>10}{'preference':>12}{'gap':>9}{'recovered':>11}")
        out[family] = {}
        for key, label, higher in METRICS:
            r = recovery(ft.get(key), rag.get(key), final.get(key), higher)
            out[family][key] = {"finetuned": ft.get(key), "rag": rag.get(key), "final": final.get(key), **r}
            fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
            rec = "no gap" if r["recovered"] is None else f"{r['recovered']:.0%}"
            print(f"{label:<24}{fmt(ft.get(key)):>12}{fmt(rag.get(key)):>10}{fmt(final.get(key)):>12}"
                  f"{fmt(r['gap']):>9}{rec:>11}")
        lat = {name: c.get("latency_p50") for name, c in (("fine-tuned", ft), ("+ RAG", rag), ("preference", final))}
        print("latency p50 (s, batch 1): " + ", ".join(f"{k} {v:.3f}" for k, v in lat.items() if v is not None))
        out[family]["latency_p50"] = lat
        for key in ("safety_agreement", "claim_hallucination"):
            r = out[family][key]["recovered"]
            verdict = ("no retrieval gain to recover" if r is None else
                       f"{'meets' if r >= args.target else 'misses'} the {args.target:.0%} target")
            print(f"  {key}: {verdict}")
    return out


if __name__ == "__main__":
    main()
