"""Packaging and the Bento: the package stage script on a scratch project, then `bentoml build` of this
repository (offline: lock_packages false, STACK.md §7) and the container recipe it generates."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

import safetyvlm
from safetyvlm.serve.launch import free_port, stop_server

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "models" / "shipped" / "qwen2_5_vl-tiny"
pytestmark = pytest.mark.slow


def child_env(home: Path) -> dict:
    return {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(Path(safetyvlm.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch project laid out like the pipeline's: a final model, metrics, params; no index."""
    tmp = tmp_path_factory.mktemp("package")
    shutil.copytree(TINY, tmp / "models" / "final" / "qwen2_5_vl" / "merged")
    (tmp / "metrics" / "detail").mkdir(parents=True)
    (tmp / "metrics" / "detail" / "eval.json").write_text(json.dumps({"name_f1": 0.41, "json_valid": 1.0}))
    (tmp / "params.yaml").write_text(yaml.safe_dump({
        "package": {"family": "qwen2_5_vl", "include_rag": False, "name": "safetyvlm"},
        "finetune": {"steps": 150}}))
    # a user's own store exported (as BentoML users do): the stage still writes the project store, .bentoml,
    # which is its output in dvc.yaml
    env = child_env(tmp / "users-own-store")
    out = subprocess.run([sys.executable, str(ROOT / "stages" / "package.py")], cwd=tmp, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return tmp, out.stdout


def test_package_stage_stores_model_kb_and_metadata(project):
    tmp, stdout = project
    record = json.loads((tmp / "models" / "package" / "record.json").read_text())
    assert re.fullmatch(r"safetyvlm:[a-z0-9]+", record["tag"]) and record["tag"] in stdout
    assert record["store_path"].startswith(".bentoml/models/safetyvlm/")   # the project store, relative
    assert not (tmp / "users-own-store").exists() and "this stage writes to the project store" in stdout
    store = tmp / record["store_path"]
    files = set(record["files"])
    assert {"model/model.safetensors", "model/config.json", "model/tokenizer.json", "model/processor_config.json",
            "kb/tools.yaml", "kb/corpus.yaml"} <= files
    assert not any(f.startswith("rag/") for f in files) and not any(f.endswith((".bin", ".pt")) for f in files)
    meta = yaml.safe_load((store / "model.yaml").read_text())["metadata"]
    assert meta["family"] == "qwen2_5_vl" and meta["metrics"] == {"name_f1": 0.41, "json_valid": 1.0}
    assert meta["params"]["finetune"] == {"steps": 150} and meta["git_revision"] == "unknown"  # not a git checkout


def test_package_records_the_git_revision_and_refuses_pickles(tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(TINY / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    code = ("import sys; from safetyvlm.serve.package import package_model\n"
            "print(package_model(sys.argv[1], repo_dir=sys.argv[3]))\n"
            "try:\n    package_model(sys.argv[2])\nexcept FileNotFoundError as e:\n    print('refused:', e)")
    out = subprocess.run([sys.executable, "-c", code, str(TINY), str(pickled), str(ROOT)],
                         env=child_env(tmp_path / "home"), capture_output=True, text=True, check=True).stdout
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    [model_yaml] = (tmp_path / "home" / "models" / "safetyvlm").glob("*/model.yaml")
    assert out.splitlines()[0].split(":")[1] in str(model_yaml)
    assert yaml.safe_load(model_yaml.read_text())["metadata"]["git_revision"].startswith(head)
    assert "refused:" in out and "safetensors only" in out


@pytest.fixture(scope="module")
def bento(project):
    """`bentoml build` of this repository into the scratch project's store: (tag, Bento directory)."""
    tmp, _ = project
    env = child_env(tmp / ".bentoml")
    out = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-1500:] + out.stderr[-1500:]
    tag = re.search(r"safetyvlm:[a-z0-9]+", out.stdout).group(0)
    return tag, tmp / ".bentoml" / "bentos" / "safetyvlm" / tag.split(":")[1]


def test_bentoml_build_makes_a_non_root_container_recipe_with_a_health_check(project, bento):
    tmp, _ = project
    tag, bento = bento
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    record = json.loads((tmp / "models" / "package" / "record.json").read_text())
    assert info["service"] == "safetyvlm.serve.service:SafetyVLM"
    assert [m["tag"] for m in info["models"]] == [record["tag"]]            # the packaged model rides along
    assert {s["name"] for s in info["services"]} == {"safetyvlm", "safetyvlm-model"}
    assert {"PYTHONPATH", "SAFETYVLM_MODEL", "HF_HUB_OFFLINE"} <= {e["name"] for e in info["envs"]}
    src = bento / "src"
    assert (src / "src" / "safetyvlm" / "serve" / "dashboard.html").is_file()
    assert (src / "src" / "safetyvlm" / "kb" / "tools.yaml").is_file()
    assert (src / "src" / "safetyvlm" / "kb" / "manifest.json").is_file()   # the KB check runs in the Bento
    assert not list(src.rglob("*.safetensors"))                            # weights come from the model store
    reqs = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "torch==2.13.0" in reqs and "bentoml==1.4.40" in reqs

    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] == "bentoml"                                 # runs as the non-root user
    assert re.search(r"useradd .*-u \$BENTO_USER_UID", dockerfile) and "BENTO_USER_UID=1034" in dockerfile
    assert re.search(r"^EXPOSE 3000$", dockerfile, re.M)
    health = re.search(r"^HEALTHCHECK .*\n?.*CMD .*", dockerfile, re.M)
    assert health and "/livez" in dockerfile[health.start():health.start() + 400]
    assert health.start() < re.search(r"^ENTRYPOINT ", dockerfile, re.M).start()

    # checkov on the generated recipe: no failed check (skips, if any, carry their reason in the template)
    from test_supply_chain import checkov

    report = checkov("dockerfile", bento / "env" / "docker" / "Dockerfile")
    assert report["summary"]["failed"] == 0, [c["check_id"] for c in report["results"]["failed_checks"]]
    assert report["summary"]["passed"] > 5


def serve_bento(project, bento_dir: Path, log: Path, timeout=180) -> tuple[int | None, str]:
    """`bentoml serve` of a Bento directory as its container would run it (the library from the Bento's
    own src/, the packaged model from the store, a token): (exit code or None once ready, the log)."""
    tmp, _ = project
    record = json.loads((tmp / "models" / "package" / "record.json").read_text())
    port = free_port()
    env = {**child_env(tmp / ".bentoml"), "PYTHONPATH": str(bento_dir / "src" / "src"),
           "SAFETYVLM_MODEL": record["tag"], "SAFETYVLM_API_TOKEN": "tok-bento", "SAFETYVLM_TORCH_THREADS": "1",
           "SAFETYVLM_DRAIN_S": "0"}
    env.pop("SAFETYVLM_AUTH", None)
    env.pop("SAFETYVLM_KB_VERIFY", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", str(bento_dir), "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                return proc.returncode, log.read_text(errors="replace")
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=3).status_code == 200:
                    return None, log.read_text(errors="replace")
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"neither ready nor exited after {timeout} s:\n{log.read_text()[-2000:]}")
    finally:
        stop_server(proc, wait_s=15)


def test_an_edited_knowledge_base_is_refused_inside_the_bento(project, bento, tmp_path):
    """The Bento carries kb/manifest.json: its own copy of the KB serves; edited, or without its
    manifest, the service refuses to start (no development switch set)."""
    _, bento_dir = bento
    clean = tmp_path / "clean"
    shutil.copytree(bento_dir, clean)
    rc, log = serve_bento(project, clean, tmp_path / "clean.log")
    assert rc is None, log[-2000:]                                          # the Bento as built serves

    edited = tmp_path / "edited"
    shutil.copytree(bento_dir, edited)
    tools = edited / "src" / "src" / "safetyvlm" / "kb" / "tools.yaml"
    text = tools.read_text()
    assert "- safety glasses (ANSI Z87.1)" in text
    tools.write_text(text.replace("- safety glasses (ANSI Z87.1)", "- none needed", 1))  # a planted edit
    rc, log = serve_bento(project, edited, tmp_path / "edited.log")
    print(f"\nedited KB in the Bento: exit {rc}: " + log.strip().splitlines()[-1][:300])
    assert rc not in (None, 0)
    assert "does not match" in log and str(tools) in log                   # the Bento's own copy was checked

    bare = tmp_path / "no-manifest"
    shutil.copytree(bento_dir, bare)
    (bare / "src" / "src" / "safetyvlm" / "kb" / "manifest.json").unlink()
    rc, log = serve_bento(project, bare, tmp_path / "bare.log")
    print("no manifest in the Bento: exit", rc)
    assert rc not in (None, 0) and "no manifest.json beside it" in log
