"""DVC speed figures: a no-op `dvc repro` (goal <= 3 s) and, from a log, the whole default graph (goal <= 20 min, issue 18).

    python benchmarks/dvc_noop.py [--repo .] [--runs 5] [--targets STAGE ...]   # time a no-op dvc repro
    python benchmarks/dvc_noop.py --log LOG ...                                  # + stage times from LOG
    python3 benchmarks/dvc_noop.py --record LOG -- make repro                    # run a command, write LOG
    python benchmarks/dvc_noop.py --log LOG --runs 0 --save                      # + write the figures' JSON

`--record` runs the command, passes its output through and writes each line to LOG prefixed with the
seconds since start (`[  12.34] Running stage 'dataset':`); stdlib only, so it can wrap `make repro`
by any python3. `--log` reads such a log: each stage's time is from its "Running stage" line to
the next stage's (or the end), the graph's from `dvc repro` (make's echo of it, else the first stage
line) to the end. The no-op timing first checks `dvc status` is clean and refuses otherwise, so it never
starts training. Figures are reported, never enforced (exit 0 unless the pipeline is not up to date).
`--save` writes the log's stage times to benchmarks/results/repro_time.json (docs/dvc.md shows them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "repro_time.json"
NOOP_GOAL_S = 3.0
GRAPH_GOAL_S = 20 * 60
STAMP = re.compile(r"^\[\s*(\d+(?:\.\d+)?)\] ?(.*)$")
RUNNING = re.compile(r"^Running stage '([^']+)'")
SKIPPED = re.compile(r"^Stage '([^']+)' (?:didn't change|is cached)")


def record(log: Path, cmd: list[str]) -> int:
    """Run cmd; echo its output and write it, time-stamped, to log. Returns cmd's exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # stage output arrives when printed, not at exit
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    with open(log, "w", encoding="utf-8") as fh:
        for raw in proc.stdout:
            sys.stdout.buffer.write(raw)
            sys.stdout.buffer.flush()
            line = raw.decode("utf-8", "replace").rstrip("\n").split("\r")[-1]  # progress bars: last state
            fh.write(f"[{time.monotonic() - t0:9.2f}] {line}\n")
            fh.flush()
    rc = proc.wait()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"[{time.monotonic() - t0:9.2f}] (exit {rc})\n")
    return rc


def parse_log(text: str) -> dict:
    """Stage durations (s, in run order), the graph's span and the stages that were already up to date."""
    lines = [(float(m.group(1)), m.group(2)) for m in map(STAMP.match, text.splitlines()) if m]
    if not lines:
        raise ValueError("no time-stamped lines: record the log with --record")
    end = lines[-1][0]
    start = next((t for t, s in lines if s.strip() == "dvc repro"), None)
    runs = [(t, m.group(1)) for t, s in lines if (m := RUNNING.match(s))]
    skipped = [m.group(1) for _, s in lines if (m := SKIPPED.match(s))]
    if start is None:
        first = [t for t, s in lines if RUNNING.match(s) or SKIPPED.match(s)]
        start = first[0] if first else lines[0][0]
    stages = {}
    for i, (t, name) in enumerate(runs):
        stages[name] = (runs[i + 1][0] if i + 1 < len(runs) else end) - t
    return {"stages": stages, "skipped": skipped, "graph_s": end - start, "before_s": start}


def time_noop(repo: Path, runs: int, targets: list[str]) -> list[float]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    status = subprocess.run(["dvc", "status", *targets], cwd=repo, env=env, capture_output=True, text=True)
    if status.returncode != 0 or "up to date" not in status.stdout:
        raise SystemExit(f"the pipeline is not up to date in {repo}, so `dvc repro` would run stages; "
                         f"run it first.\n{status.stdout}{status.stderr}")
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run(["dvc", "repro", *targets], cwd=repo, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if out.returncode != 0 or "Running stage" in out.stdout + out.stderr:
            raise SystemExit(f"`dvc repro` was not a no-op:\n{out.stdout}{out.stderr}")
    return times


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "NOT met"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--runs", type=int, default=5, help="no-op repro runs to time (0: skip)")
    ap.add_argument("--targets", nargs="*", default=[], help="stages (default: the whole graph)")
    ap.add_argument("--log", help="a log written by --record: report its stage and graph times")
    ap.add_argument("--record", metavar="LOG", help="run the command after -- and write LOG")
    ap.add_argument("--save", nargs="?", const=str(RESULTS), metavar="JSON",
                    help="with --log: write its stage times to JSON (default benchmarks/results/repro_time.json)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.record:
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            ap.error("--record LOG -- COMMAND ...")
        return record(Path(args.record), cmd)

    cores = os.cpu_count()
    if args.log:
        r = parse_log(Path(args.log).read_text(encoding="utf-8"))
        print(f"whole graph from {args.log} ({cores} cores):")
        for name, s in r["stages"].items():
            print(f"  {name:<36} {s:8.1f} s  {s / 60:5.1f} min")
        if r["skipped"]:
            print(f"  up to date, not run: {', '.join(r['skipped'])}")
        print(f"  dvc repro, {len(r['stages'])} stages run: {r['graph_s'] / 60:.1f} min "
              f"(goal <= {GRAPH_GOAL_S / 60:.0f} min: {verdict(r['graph_s'], GRAPH_GOAL_S)}); "
              f"before it (install): {r['before_s'] / 60:.1f} min")
        if args.save:
            Path(args.save).write_text(json.dumps({
                "date": datetime.date.today().isoformat(), "cores": cores, "goal_s": GRAPH_GOAL_S,
                "graph_s": round(r["graph_s"], 1), "skipped": r["skipped"],
                "stages": {k: round(v, 1) for k, v in r["stages"].items()}}, indent=1) + "\n")
            print(f"wrote {args.save}")
    elif args.save:
        ap.error("--save needs --log")
    if args.runs:
        times = time_noop(Path(args.repo), args.runs, args.targets)
        med = statistics.median(times)
        print(f"no-op dvc repro{' ' + ' '.join(args.targets) if args.targets else ''}: median {med:.2f} s "
              f"(min {min(times):.2f}, max {max(times):.2f}, {len(times)} runs, {cores} cores) "
              f"-- goal <= {NOOP_GOAL_S:.0f} s: {verdict(med, NOOP_GOAL_S)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
