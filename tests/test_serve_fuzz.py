"""Schemathesis against the service's own OpenAPI document (`/openapi.json`) on a real `bentoml serve`:
generated and mutated requests for every operation, bounded examples. No 5xx, every answer's status and
body as the spec says, the service still answers afterwards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from safetyvlm.data.render import render_scene
from safetyvlm.schema import SafetyReport
from safetyvlm.serve.launch import ServeProcess

TOKEN = "tok-fuzz-" + os.urandom(8).hex()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    with ServeProcess(tmp, tmp / "server.log", SAFETYVLM_MAX_NEW_TOKENS=32, SAFETYVLM_MAX_BATCH_SIZE=8,
                      SAFETYVLM_MAX_BODY_BYTES=300_000, SAFETYVLM_MAX_PIXELS=1_000_000,
                      SAFETYVLM_API_TOKEN=TOKEN) as s:
        yield s


def test_schemathesis_finds_no_server_error_and_no_spec_violation(srv, tmp_path):
    report = tmp_path / "report.xml"
    cmd = [str(Path(sys.executable).with_name("schemathesis")), "run", srv.url + "/openapi.json",
           "-H", f"Authorization: Bearer {TOKEN}", "--max-examples", "25", "--seed", "7",
           "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                       "response_schema_conformance",
           "--phases", "examples,coverage,fuzzing", "--request-timeout", "60", "--workers", "1",
           "--suppress-health-check", "all", "--report", "junit", "--report-junit-path", str(report)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path,  # its cache dir
                         env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    tail = out.stdout[-4000:]
    print("\n" + "\n".join(line for line in tail.splitlines() if line.strip())[-2500:])
    assert out.returncode == 0, tail + out.stderr[-2000:]
    log = srv.log_path.read_text(errors="replace")
    assert "status=500" not in log and TOKEN not in log
    # still serving
    import io

    buf = io.BytesIO()
    render_scene(3)[0].save(buf, "PNG")
    r = requests.post(srv.url + "/analyze", data=buf.getvalue(), timeout=60,
                      headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"})
    assert r.status_code == 200 and SafetyReport.model_validate(r.json())
    assert json.loads(requests.get(srv.url + "/openapi.json", timeout=10,
                                   headers={"Authorization": f"Bearer {TOKEN}"}).text)["openapi"] == "3.1.0"
