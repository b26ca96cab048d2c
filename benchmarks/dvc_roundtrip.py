"""Push a repo's pipeline outputs to a throwaway S3 (moto), pull them into a fresh clone, check nothing is lost.

    python benchmarks/dvc_roundtrip.py [--repo .] [--targets STAGE ...] [--keep]

Steps, timed: start moto's S3 server on 127.0.0.1 (a free port), create a bucket; clone the repo's HEAD
into a temp dir and lay the workspace's uncommitted changes (dvc.lock, metrics, new .gitignore files)
over it, committed in that clone only; point its cache at the repo's cache and `dvc push -r roundtrip`;
`git clone` that again (a machine with nothing), `dvc pull -r roundtrip`; then `dvc status` must be clean,
`dvc repro --dry` must run nothing, the remote must hold everything (`dvc status -c`), and every file of
every output must be byte-identical (sha256) to the repo's. Exit 1 with the reason otherwise.

The repo itself is only read: the remote lives in the temp clones' `.dvc/config.local`, never in the
committed config; the server and the temp dir are removed at the end (--keep keeps the dir).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BUCKET = "safetyvlm-dvc-roundtrip"
GIT_ID = ["-c", "user.name=dvc-roundtrip", "-c", "user.email=dvc-roundtrip@localhost"]


class RoundtripError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_env(work: Path) -> dict:
    """The environment for DVC against the local server: throwaway keys, nothing from the user's AWS setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(work / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(work / "no-aws-credentials"),
        DVC_NO_ANALYTICS="1",
    )
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def sh(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise RoundtripError(f"`{' '.join(cmd)}` failed in {cwd} (exit {proc.returncode}):\n{out}")
    return out


def timed(label: str, times: dict, fn, *args, **kwargs):
    t = time.perf_counter()
    result = fn(*args, **kwargs)
    times[label] = time.perf_counter() - t
    return result


def overlay_workspace(repo: Path, clone: Path, env: dict) -> int:
    """Copy the repo's uncommitted changes (tracked and untracked, not ignored) into the clone; commit there."""
    changed = sh(["git", "diff", "--name-only", "-z", "HEAD"], repo, env).split("\0")
    untracked = sh(["git", "ls-files", "--others", "--exclude-standard", "-z"], repo, env).split("\0")
    paths = sorted({p for p in changed + untracked if p})
    for rel in paths:
        src, dst = repo / rel, clone / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif not src.exists():
            dst.unlink(missing_ok=True)
    if paths:
        sh(["git", "add", "-A"], clone, env)
        sh(["git", *GIT_ID, "commit", "-q", "--no-verify", "-m", "roundtrip: the workspace's uncommitted state"], clone, env)
    return len(paths)


def stage_outs(clone: Path, targets: list[str]) -> list[str]:
    """Output paths of the locked stages (those named by targets, a foreach group name matching all its items)."""
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    outs = []
    for name, stage in lock.get("stages", {}).items():
        if targets and not any(name == t or name.startswith(t + "@") for t in targets):
            continue
        outs += [o["path"] for o in stage.get("outs", [])]
    return outs


def file_hashes(root: Path, rel: str) -> dict[str, str]:
    base = root / rel
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
    out = {}
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[str(f.relative_to(root))] = h.hexdigest()
    return out


def compare_outputs(repo: Path, clone: Path, outs: list[str]) -> tuple[int, int]:
    """Every file of every output, byte for byte. Returns (files, bytes)."""
    nfiles = nbytes = 0
    problems = []
    for rel in outs:
        want, got = file_hashes(repo, rel), file_hashes(clone, rel)
        if not want:
            problems.append(f"{rel}: missing in the repo's workspace (run `dvc checkout` / `dvc repro` there first)")
        for f in sorted(set(want) | set(got)):
            if want.get(f) != got.get(f):
                state = "missing in the clone" if f not in got else "not in the repo" if f not in want else "differs"
                problems.append(f"{f}: {state}")
        nfiles += len(got)
        nbytes += sum((clone / f).stat().st_size for f in got)
    if problems:
        raise RoundtripError("outputs not byte-identical after the round trip:\n  " + "\n  ".join(problems[:30]))
    return nfiles, nbytes


def roundtrip(repo: Path, targets: list[str], work: Path) -> dict:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
    env = s3_env(work)
    times: dict[str, float] = {}
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)

        def use_remote(clone: Path):
            sh(["dvc", "remote", "add", "--local", "-f", "roundtrip", f"s3://{BUCKET}/cache"], clone, env)
            sh(["dvc", "remote", "modify", "--local", "roundtrip", "endpointurl", endpoint], clone, env)

        # pusher: the repo's HEAD + its uncommitted state, reading objects from the repo's own cache
        pusher, fresh = work / "pusher", work / "clone"
        head = sh(["git", "rev-parse", "HEAD"], repo, env).strip()
        sh(["git", "clone", "-q", "--no-checkout", str(repo), str(pusher)], work, env)
        sh(["git", "fetch", "-q", str(repo), head], pusher, env)
        sh(["git", "checkout", "-q", "-b", "roundtrip", head], pusher, env)
        overlaid = overlay_workspace(repo, pusher, env)
        cache_dir = sh(["dvc", "cache", "dir"], repo, env).strip().splitlines()[-1]
        sh(["dvc", "cache", "dir", "--local", cache_dir], pusher, env)
        use_remote(pusher)
        pushed = timed("push", times, sh, ["dvc", "push", "-r", "roundtrip", *targets], pusher, env)

        # a machine that has only git: clone, pull, and nothing may be left to do
        timed("clone", times, sh, ["git", "clone", "-q", str(pusher), str(fresh)], work, env)
        use_remote(fresh)
        pulled = timed("pull", times, sh, ["dvc", "pull", "-r", "roundtrip", *targets], fresh, env)
        status = timed("status", times, sh, ["dvc", "status", *targets], fresh, env)
        if "up to date" not in status:
            raise RoundtripError(f"`dvc status` in the fresh clone is not clean:\n{status}")
        dry = sh(["dvc", "repro", "--dry", *targets], fresh, env)
        if "Running stage" in dry:
            raise RoundtripError(f"`dvc repro` in the fresh clone would run stages:\n{dry}")
        cloud = timed("status -c", times, sh, ["dvc", "status", "-c", "-r", "roundtrip", *targets], fresh, env)
        if "in sync" not in cloud:
            raise RoundtripError(f"the remote does not hold every object:\n{cloud}")
        outs = stage_outs(fresh, targets)
        nfiles, nbytes = timed("compare", times, compare_outputs, repo, fresh, outs)
    finally:
        server.stop()
    return dict(times=times, overlaid=overlaid, outs=len(outs), files=nfiles, bytes=nbytes,
                pushed=last_line(pushed), pulled=last_line(pulled))


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="git + dvc repo (default: this one)")
    ap.add_argument("--targets", nargs="*", default=[], help="stages to push/pull (default: all locked)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with the two clones")
    args = ap.parse_args(argv)
    repo = Path(args.repo).resolve()
    work = Path(tempfile.mkdtemp(prefix="dvc-roundtrip-"))
    t0 = time.perf_counter()
    try:
        r = roundtrip(repo, args.targets, work)
    except RoundtripError as err:
        print(f"dvc round trip FAILED: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    t = r["times"]
    print(f"dvc round trip through S3 (moto) of {repo}: OK in {time.perf_counter() - t0:.1f} s")
    print(f"  workspace changes laid over HEAD: {r['overlaid']} files")
    print(f"  push    {t['push']:6.1f} s  ({r['pushed']})")
    print(f"  clone   {t['clone']:6.1f} s")
    print(f"  pull    {t['pull']:6.1f} s  ({r['pulled']})")
    print(f"  status  {t['status']:6.1f} s  clean; `dvc repro --dry` runs nothing; remote in sync ({t['status -c']:.1f} s)")
    print(f"  compare {t['compare']:6.1f} s  {r['outs']} outputs, {r['files']} files, {r['bytes'] / 1e6:.1f} MB byte-identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
