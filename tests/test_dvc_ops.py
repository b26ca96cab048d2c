"""DVC in practice, with the real dvc CLI and a real S3 server (moto) on 127.0.0.1: push, fresh clone, pull;
experiments and metrics diff; a stage killed mid-write; a corrupt or missing cache object; the remote down.

A tiny copy of the project (dataset + the two base stages, ~10 s) is built once per module and copied
for each test; only those cheap stages run.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from project_copy import copy_project

ROOT = Path(__file__).resolve().parents[1]
CHEAP = ["dataset", "base"]  # the stages these tests run; `base` is the foreach group (both families)
BUCKET = "safetyvlm-dvc"  # the bucket of the committed remote url


def run(cmd, cwd, env, ok=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    if ok is not None:
        assert (proc.returncode == 0) == ok, f"{cmd} exit {proc.returncode}:\n{out}"
    return out


def dvc(path, env, *args, ok=True):
    return run(["dvc", *args], path, env, ok)


def dvc_json(path, env, *args):
    """stdout only: DVC warns on stderr about the unbuilt stages' missing metrics and plots."""
    proc = subprocess.run(["dvc", *args, "--json"], cwd=path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def outs(path, stages=CHEAP):
    lock = yaml.safe_load((path / "dvc.lock").read_text())["stages"]
    return [o["path"] for name, s in lock.items() if name.split("@")[0] in stages for o in s["outs"]]


def hashes(path, stages=CHEAP):
    """sha256 of every file of every output of `stages`, by path."""
    found = {}
    for rel in outs(path, stages):
        base = path / rel
        for f in [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()):
            found[str(f.relative_to(path))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found


def cache_object(path, out, relpath=None):
    """The cache file of output `out` (a file inside it when `out` is a directory)."""
    lock = yaml.safe_load((path / "dvc.lock").read_text())["stages"]
    md5 = next(o["md5"] for s in lock.values() for o in s["outs"] if o["path"] == out)
    obj = lambda h: path / ".dvc/cache/files/md5" / h[:2] / h[2:]  # noqa: E731
    if relpath is None:
        return obj(md5)
    return obj(next(e["md5"] for e in json.loads(obj(md5).read_text()) if e["relpath"] == relpath))


def base_env(path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(path / "src"),
        AWS_ACCESS_KEY_ID="testing",  # keys from the environment, as the README says
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(path.parent / "no-aws-config"),  # nothing from the user's ~/.aws
        AWS_SHARED_CREDENTIALS_FILE=str(path.parent / "no-aws-credentials"),
        DVC_NO_ANALYTICS="1",
    )
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The project (its committed .dvc/config, .dvcignore, .gitignore) in a fresh git+dvc repo, tiny
    sizes, the cheap stages run and everything committed."""
    path = tmp_path_factory.mktemp("built") / "p"
    path.mkdir()
    copy_project(path, extra_files=(".dvcignore", ".gitignore"))
    env = base_env(path)
    run(["git", "init", "-q"], path, env)
    run(["git", "config", "user.name", "test"], path, env)
    run(["git", "config", "user.email", "test@localhost"], path, env)
    dvc(path, env, "init", "-q")
    shutil.copy(ROOT / ".dvc/config", path / ".dvc/config")  # the committed remote, autostage
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "project"], path, env)
    dvc(path, env, "repro", *CHEAP)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "outputs of the cheap stages"], path, env)
    return path


@pytest.fixture()
def project(built, tmp_path):
    path = tmp_path / "p"
    shutil.copytree(built, path, symlinks=True)
    return path, base_env(path)


class S3:
    """moto's S3 server on a free port of 127.0.0.1, with the remote's bucket; stop() = the remote is down."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.up = False

    def start(self):
        self.server.start()
        self.up = True

    def stop(self):
        if self.up:
            self.server.stop()
            self.up = False


@pytest.fixture()
def s3():
    import boto3

    server = S3()
    server.start()
    try:
        reset = urllib.request.Request(f"{server.endpoint}/moto-api/reset", method="POST")  # state is per process
        urllib.request.urlopen(reset, timeout=10)
        boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()


def use_endpoint(path, env, s3):
    """The endpoint goes to the uncommitted .dvc/config.local, as a user would set it."""
    dvc(path, env, "remote", "modify", "--local", "storage", "endpointurl", s3.endpoint)


def clone(path, dest, env):
    run(["git", "clone", "-q", str(path), str(dest)], dest.parent, env)
    return dest


def test_the_final_models_are_declared_artifacts():
    from dvc.repo import Repo

    repo = Repo(str(ROOT))
    artifacts = repo.artifacts.read()["dvc.yaml"]
    stage_outs = {str(o.def_path) for o in repo.index.outs}
    for family in ("qwen2_5_vl", "mllama"):
        art = artifacts[f"safetyvlm-{family}"]
        assert (art.path, art.type) == (f"models/final/{family}", "model")
        assert art.path in stage_outs  # produced by the pipeline, so `dvc artifacts get` can fetch it
    config = (ROOT / ".dvc/config").read_text()
    assert "url = s3://safetyvlm-dvc/cache" in config and "endpointurl" not in config and "secret" not in config


@pytest.mark.slow
def test_push_then_pull_into_a_fresh_clone_is_byte_identical(project, s3, tmp_path):
    path, env = project
    use_endpoint(path, env, s3)
    assert run(["git", "status", "--porcelain", ".dvc"], path, env) == ""  # nothing to commit: config.local
    assert "files pushed" in dvc(path, env, "push", *CHEAP)

    # a machine with only git: the endpoint from the environment this time, no local config
    fresh = clone(path, tmp_path / "fresh", env)
    fresh_env = {**env, "AWS_ENDPOINT_URL": s3.endpoint}
    assert not (fresh / "data/dataset").exists()
    assert "files fetched" in dvc(fresh, fresh_env, "pull", *CHEAP)
    assert "Data and pipelines are up to date." in dvc(fresh, fresh_env, "status", *CHEAP)
    assert "Running stage" not in dvc(fresh, fresh_env, "repro", *CHEAP)
    assert "in sync" in dvc(fresh, fresh_env, "status", "-c", *CHEAP)
    want = hashes(path)
    assert len(want) >= 20 and any(f.endswith("model.safetensors") for f in want)
    assert hashes(fresh) == want


@pytest.mark.slow
def test_the_roundtrip_script_reads_the_repo_and_carries_uncommitted_outputs(project):
    path, env = project
    # an uncommitted re-run, as in CI after `make repro`: dvc.lock and metrics differ from HEAD
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["dataset"]["seed"] = 5
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(path, env, "repro", "dataset")
    config = (path / ".dvc/config").read_text()
    script = str(ROOT / "benchmarks/dvc_roundtrip.py")
    out = run([sys.executable, script, "--repo", str(path), "--targets", "dataset"], ROOT, env)
    assert "OK" in out and "byte-identical" in out, out
    assert re.search(r"workspace changes laid over HEAD: [1-9]", out), out
    # the repo was only read: no remote added to its config, no local config written
    assert (path / ".dvc/config").read_text() == config and not (path / ".dvc/config.local").exists()


@pytest.mark.slow
def test_an_experiment_shows_in_metrics_diff_and_exp_show(project):
    path, env = project
    base_before = hashes(path, ["base"])
    out = dvc(path, env, "exp", "run", "-S", "dataset.seed=1", "dataset")
    name = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
    assert "Running stage 'dataset'" in out and "Running stage 'base" not in out

    seed = dvc_json(path, env, "params", "diff")["params.yaml"]["dataset.seed"]
    assert (seed["old"], seed["new"]) == (0, 1)
    diff = dvc_json(path, env, "metrics", "diff")["metrics/dataset.json"]
    assert diff and all(d["old"] != d["new"] for d in diff.values())
    assert "metrics/dataset.json" in dvc(path, env, "metrics", "diff")  # the table a user reads

    assert name in dvc(path, env, "exp", "show", "--only-changed", "--no-pager")
    rows = dvc(path, env, "exp", "show", "--only-changed", "--csv").splitlines()
    header, exp_row = rows[0].split(","), next(r.split(",") for r in rows if r.startswith(name + ","))
    assert exp_row[header.index("dataset.seed")] == "1"
    assert hashes(path, ["base"]) == base_before


@pytest.mark.slow
def test_a_stage_killed_mid_write_leaves_the_rest_and_the_next_repro_recovers(project):
    path, env = project
    lock_before, base_before = (path / "dvc.lock").read_bytes(), hashes(path, ["base"])
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["dataset"]["sizes"]["train"] = 150  # a few seconds of rendering, then the atomic write
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    proc = subprocess.Popen(["dvc", "repro", "dataset"], cwd=path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not glob.glob(str(path / "data/.dataset.tmp-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage's python: a crash, nothing gets to clean up
    proc.wait()

    temps = glob.glob(str(path / "data/.dataset.tmp-*"))
    assert temps, "the kill should land while the dataset is being written"
    # the new dataset never appears half-written (DVC removed the old one from the workspace before the
    # stage ran; it is still in the cache)
    assert not (path / "data/dataset").exists()
    assert (path / "dvc.lock").read_bytes() == lock_before
    assert hashes(path, ["base"]) == base_before
    assert f'"pid": {proc.pid}' in (path / ".dvc/tmp/rwlock").read_text()  # DVC's lock names the dead run

    out = dvc(path, env, "repro", "dataset")
    assert "had been killed. Auto removed it from the lock file." in out  # the stale rwlock entry
    total = sum(params["dataset"]["sizes"].values()) + params["dataset"].get("shifted", {}).get("size", 0)
    assert "Running stage 'dataset'" in out and f"dataset: {total} images" in out
    assert not glob.glob(str(path / "data/.dataset.tmp-*"))  # the killed run's temp is swept
    assert "Running stage" not in dvc(path, env, "repro", *CHEAP)
    assert "Data and pipelines are up to date." in dvc(path, env, "status", *CHEAP)
    assert hashes(path, ["base"]) == base_before


@pytest.mark.slow
def test_a_corrupt_or_missing_cache_object_is_reported_and_pulled_again(project, s3):
    path, env = project
    use_endpoint(path, env, s3)
    dvc(path, env, "push", "dataset", "base@mllama")
    want = hashes(path)
    corrupt = cache_object(path, "models/base/mllama", "model.safetensors")
    corrupt.chmod(0o644)  # DVC keeps cache files read-only
    data = bytearray(corrupt.read_bytes())
    data[1000] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    missing = cache_object(path, "data/dataset", "dataset_dict.json")
    missing.unlink()

    # `dvc status` re-hashes the cache: the corrupt object is dropped and both outputs are named
    status = dvc(path, env, "status", *CHEAP)
    assert re.search(r"not in cache:\s+models/base/mllama", status), status
    assert re.search(r"not in cache:\s+data/dataset", status), status
    assert not corrupt.exists()
    shutil.rmtree(path / "models/base/mllama")
    out = dvc(path, env, "checkout", "base@mllama", ok=False)
    assert "Checkout failed" in out and "models/base/mllama" in out

    dvc(path, env, "pull", "dataset", "base@mllama")
    assert "Data and pipelines are up to date." in dvc(path, env, "status", *CHEAP)
    assert hashes(path) == want


@pytest.mark.slow
def test_the_remote_down_is_a_clear_error_and_loses_nothing(project, s3, tmp_path):
    path, env = project
    use_endpoint(path, env, s3)
    dvc(path, env, "push", "dataset")
    s3.stop()
    env = {**env, "AWS_MAX_ATTEMPTS": "1"}  # fail at once (botocore's default retries take ~30 s)

    params = yaml.safe_load((path / "params.yaml").read_text())
    params["dataset"]["seed"] = 7
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(path, env, "repro", "dataset")  # the pipeline itself never needs the remote
    run(["git", "commit", "-qam", "seed 7"], path, env)
    want = hashes(path, ["dataset"])

    out = dvc(path, env, "push", "dataset", ok=False)
    assert f'Could not connect to the endpoint URL: "{s3.endpoint}/{BUCKET}/cache' in out, out
    fresh = clone(path, tmp_path / "fresh", env)
    use_endpoint(fresh, env, s3)
    out = dvc(fresh, env, "pull", "dataset", ok=False)
    assert "failed to pull data from the cloud" in out and "Could not connect to the endpoint URL" in out, out
    assert "Data and pipelines are up to date." in dvc(path, env, "status", "dataset")
    assert hashes(path, ["dataset"]) == want

    s3.start()  # back on the same port (moto keeps its bucket): the push completes and the clone pulls
    assert re.search(r"\d+ files? pushed", dvc(path, env, "push", "dataset"))
    dvc(fresh, env, "pull", "dataset")
    assert hashes(fresh, ["dataset"]) == want


@pytest.mark.slow
def test_the_noop_benchmark_reads_a_recorded_repro_and_times_a_noop(project, tmp_path):
    path, env = project
    bench, log = str(ROOT / "benchmarks/dvc_noop.py"), tmp_path / "logs/repro.log"
    # as .ci/run wraps `make repro` (make echoes the command first)
    run([sys.executable, bench, "--record", str(log), "--", "sh", "-c", "echo dvc repro; dvc repro -f dataset"], path, env)
    assert re.search(r"^\[\s*[\d.]+\] Running stage 'dataset':$", log.read_text(), re.M)
    out = run([sys.executable, bench, "--repo", str(path), "--targets", *CHEAP, "--runs", "2", "--log", str(log)], ROOT, env)
    assert re.search(r"dataset\s+[\d.]+ s", out) and "1 stages run" in out, out
    assert re.search(r"no-op dvc repro dataset base: median [\d.]+ s .* goal <= 3 s: (met|NOT met)", out), out
    # --save: the log's stage times as the JSON docs/dvc.md's figures are made from
    saved = tmp_path / "repro_time.json"
    run([sys.executable, bench, "--runs", "0", "--log", str(log), "--save", str(saved)], ROOT, env)
    figures = json.loads(saved.read_text())
    assert list(figures["stages"]) == ["dataset"] and figures["stages"]["dataset"] > 0
    assert figures["goal_s"] == 1200 and figures["graph_s"] >= figures["stages"]["dataset"]

    # not up to date: it refuses rather than start a stage
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["dataset"]["seed"] = 3
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, bench, "--repo", str(path), "--runs", "1"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "not up to date" in proc.stderr
    assert "Running stage" not in proc.stdout + proc.stderr


def test_record_passes_the_commands_exit_code_through(tmp_path):
    log = tmp_path / "x.log"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/dvc_noop.py"), "--record", str(log), "--",
                           sys.executable, "-c", "print('hi'); raise SystemExit(3)"], capture_output=True, text=True)
    assert proc.returncode == 3 and proc.stdout == "hi\n"
    assert re.match(r"^\[\s*[\d.]+\] hi\n\[\s*[\d.]+\] \(exit 3\)\n$", log.read_text())
