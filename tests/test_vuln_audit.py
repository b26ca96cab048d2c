"""benchmarks/pypi_latest_audit.py, the check beside pip-audit (which cannot audit through this network):
run as CI runs it, on installed dist-info directories made here, against a local server that answers
PyPI's project JSON API."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from safetyvlm.serve.launch import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "pypi_latest_audit.py"


def vuln(vid, *aliases, withdrawn=None):
    return {"id": vid, "aliases": list(aliases), "fixed_in": ["9.9"], "link": f"https://osv.dev/vulnerability/{vid}",
            "withdrawn": withdrawn}


# name -> (latest version, vulnerabilities of the latest release)
PROJECTS = {
    "alpha": ("1.0", [vuln("GHSA-aaaa-bbbb-cccc", "CVE-2099-0001")]),
    "beta": ("2.0", [vuln("PYSEC-2026-2447", "CVE-2025-69872")]),          # accepted in EXCEPTIONS
    "gamma": ("1.5", [vuln("GHSA-gggg-gggg-gggg")]),                          # installed 1.0: not the latest
    "delta-pkg": ("1.0", [vuln("GHSA-dddd-dddd-dddd", withdrawn="2026-01-01T00:00:00Z")]),
    "eta": ("3.1", []),
}


@pytest.fixture(scope="module")
def index():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            parts = self.path.strip("/").split("/")  # pypi/<name>/json
            if len(parts) == 3 and parts[0] == "pypi" and parts[2] == "json" and parts[1] in PROJECTS:
                latest, vulns = PROJECTS[parts[1]]
                body = json.dumps({"info": {"name": parts[1], "version": latest}, "vulnerabilities": vulns}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pypi"
    server.shutdown()


def install(site: Path, name: str, version: str, direct_url: dict | None = None) -> None:
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if direct_url:
        (d / "direct_url.json").write_text(json.dumps(direct_url))


def run(site: Path, index: str, tmp: Path):
    out = tmp / "audit.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--path", str(site), "--index-url", index, "--json", str(out),
                           "--timeout", "5"], capture_output=True, text=True, timeout=120)
    return proc, json.loads(out.read_text())


def test_a_vulnerable_latest_release_fails_and_the_rest_is_accounted_for(index, tmp_path):
    site = tmp_path / "site"
    install(site, "alpha", "1.0")
    install(site, "beta", "2.0")
    install(site, "gamma", "1.0")
    install(site, "delta-pkg", "1.0+cpu")    # a local build label: the 1.0 release
    install(site, "eta", "3.1")
    install(site, "zeta", "0.1")             # 404: not on the index
    install(site, "mine", "0.1", {"url": "file:///src/mine", "dir_info": {"editable": True}})
    proc, out = run(site, index, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert [(f["package"], f["id"]) for f in out["findings"]] == [("alpha", "GHSA-aaaa-bbbb-cccc")]
    assert "VULNERABLE alpha==1.0: GHSA-aaaa-bbbb-cccc" in proc.stdout
    assert [a["package"] for a in out["accepted"]] == ["beta"] and "diskcache" in out["accepted"][0]["accepted_because"]
    assert sorted(out["audited_packages"]) == ["alpha==1.0", "beta==2.0", "delta-pkg==1.0+cpu", "eta==3.1"]
    assert out["not_checked_reasons"]["gamma"].startswith("1.0 installed, 1.5 is the latest")
    assert "not on PyPI" in out["not_checked_reasons"]["zeta"]
    assert out["skipped_local"] == {"mine": "editable install"}
    assert (out["installed"], out["audited"], out["vulnerable"], out["not_checked"]) == (7, 4, 1, 2)


def test_without_a_finding_it_passes(index, tmp_path):
    site = tmp_path / "site"
    install(site, "beta", "2.0")
    install(site, "eta", "3.1")
    proc, out = run(site, index, tmp_path)
    assert proc.returncode == 0 and out["audited"] == 2 and out["vulnerable"] == 0, proc.stdout


def test_network_errors_do_not_fail_but_say_nothing_was_checked(tmp_path):
    site = tmp_path / "site"
    install(site, "alpha", "1.0")
    proc, out = run(site, f"http://127.0.0.1:{free_port()}/pypi", tmp_path)  # nothing listens there
    assert proc.returncode == 0
    assert out["audited"] == 0 and out["not_checked_network"] == 1
    assert "network error" in out["not_checked_reasons"]["alpha"] and "did not run" in proc.stderr
