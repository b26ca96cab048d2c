"""Supply chain: checkov on the rendered Kubernetes overlays (and, in test_serve_bento, the Bento's
Dockerfile) with zero failed checks; every skip carries a written reason in the manifest."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"  # `make tools` (part of `make test`) installs it


def checkov(framework: str, *files: Path) -> dict:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run `make tools` (checkov lives in its own venv)")
    args = [str(CHECKOV), "--framework", framework, "--output", "json", "--quiet", "--skip-download"]
    for f in files:
        args += ["-f", str(f)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip(), out.stderr[-2000:]
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    merged = {"summary": {"passed": 0, "failed": 0, "skipped": 0},
              "results": {"failed_checks": [], "skipped_checks": []}}
    for r in reports:
        for k in merged["summary"]:
            merged["summary"][k] += r["summary"][k]
        for k in merged["results"]:
            merged["results"][k] += r["results"].get(k, [])
    return merged


@pytest.mark.slow
@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_rendered_overlays_pass_checkov(overlay, tmp_path):
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                                       capture_output=True, text=True, check=True).stdout)
    report = checkov("kubernetes", rendered)
    assert report["summary"]["failed"] == 0, [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert report["summary"]["passed"] >= 80
    for skip in report["results"]["skipped_checks"]:
        assert len(skip["check_result"].get("suppress_comment", "")) > 30, skip["check_id"]  # a real reason
