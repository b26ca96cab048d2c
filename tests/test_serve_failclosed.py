"""Fail closed (issue 20, items 1-2) against real `bentoml serve` processes of this checkout: no token with
auth on, or a knowledge base whose hash manifest is missing or does not match, and the server exits
before it listens, saying why; only the explicit switches (SAFETYVLM_AUTH=off, used by `make serve` and
saying so first; SAFETYVLM_KB_VERIFY=off for development) let it start. The Bento case is in
test_serve_bento.py."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import safetyvlm
from safetyvlm.serve.launch import ROOT, TINY, free_port, serve_env, stop_server

pytestmark = pytest.mark.slow


def run_server(cmd, env, log: Path, timeout=180):
    """Start `cmd`; (exit code, or None once /readyz said 200; the log; the port)."""
    port = free_port()
    cmd = [c.replace("{port}", str(port)) for c in cmd]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                return proc.returncode, log.read_text(errors="replace"), port
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=3).status_code == 200:
                    info = requests.get(f"http://127.0.0.1:{port}/info", timeout=60)
                    return None, log.read_text(errors="replace") + f"\n/info {info.status_code} {info.text}", port
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"neither ready nor exited after {timeout} s:\n{log.read_text()[-2000:]}")
    finally:
        stop_server(proc, wait_s=15)


SERVE = [sys.executable, "-m", "bentoml", "serve", "safetyvlm.serve.service:SafetyVLM", "--host", "127.0.0.1",
         "--port", "{port}"]


def env_without_switches(home, **extra):
    env = serve_env(home, SAFETYVLM_MODEL=str(TINY), SAFETYVLM_TORCH_THREADS="1", SAFETYVLM_DRAIN_S="0", **extra)
    for key in ("SAFETYVLM_AUTH", "SAFETYVLM_KB_VERIFY", "SAFETYVLM_API_TOKEN"):
        if key not in extra:
            env.pop(key, None)
    return env


@pytest.mark.parametrize("token", [None, ""], ids=["unset", "empty"])
def test_no_token_and_auth_on_refuses_to_start(tmp_path, token):
    extra = {} if token is None else {"SAFETYVLM_API_TOKEN": token}
    t0 = time.perf_counter()
    rc, log, _ = run_server(SERVE, env_without_switches(tmp_path, **extra), tmp_path / "server.log")
    print(f"\nno token ({'unset' if token is None else 'empty'}): exit {rc} after {time.perf_counter() - t0:.1f} s")
    assert rc not in (None, 0), log[-2000:]
    assert "SAFETYVLM_API_TOKEN is unset or empty and authentication is on" in log
    assert "SAFETYVLM_AUTH=off" in log


def test_make_serve_turns_auth_off_and_says_so_first(tmp_path):
    """`make serve` serves the shipped model locally with auth explicitly off: its first line says so,
    and a route answers without a token."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    env = env_without_switches(tmp_path)
    venv = Path(sys.executable).parents[1]
    rc, log, port = run_server([make, "-s", "serve", f"VENV={venv}", "PORT={port}"], env, tmp_path / "make.log")
    assert rc is None, log[-2000:]
    first = log.strip().splitlines()[0]
    print(f"\nmake serve, first line: {first}")
    assert "authentication is OFF" in first and "SAFETYVLM_AUTH=off" in first
    assert '"auth":false' in log.replace(" ", "")                      # /info answered without a token


def test_an_edited_or_unmanifested_kb_refuses_to_start_unless_the_dev_switch_is_set(tmp_path):
    """A copy of the library whose tools.yaml was edited after its manifest: the server exits; without a
    manifest at all: exits too; SAFETYVLM_KB_VERIFY=off (development) lets it start."""
    lib = tmp_path / "lib"
    shutil.copytree(Path(safetyvlm.__file__).parent, lib / "safetyvlm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    kb = lib / "safetyvlm" / "kb"
    tools = kb / "tools.yaml"
    tools.write_text(tools.read_text().replace("- safety glasses (ANSI Z87.1)", "- none needed", 1))
    env = env_without_switches(tmp_path, SAFETYVLM_API_TOKEN="tok-kb")
    env["PYTHONPATH"] = str(lib)
    rc, log, _ = run_server(SERVE, env, tmp_path / "edited.log")
    assert rc not in (None, 0) and "does not match" in log and str(tools) in log, log[-2000:]

    (kb / "manifest.json").unlink()
    rc, log, _ = run_server(SERVE, env, tmp_path / "bare.log")
    assert rc not in (None, 0) and "no manifest.json beside it" in log, log[-2000:]

    rc, log, _ = run_server(SERVE, {**env, "SAFETYVLM_KB_VERIFY": "off"}, tmp_path / "dev.log")
    assert rc is None, log[-2000:]
    assert "knowledge-base integrity check is OFF" in log
