"""Every Kubernetes manifest, and each kustomize overlay once rendered, against the official schemas
(kubernetes-validate --strict, offline), plus the properties the deployment promises."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
VERSIONS = ["1.34.0", "1.35.0"]
OVERLAYS = ["cpu", "gpu"]
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml" and not p.name.endswith("-patch.yaml"))
VALIDATE = [sys.executable, "-c", "import sys; from kubernetes_validate.__main__ import main; sys.exit(main())"]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed (needed to render the overlays: kubectl kustomize)")
    return path


def render(overlay: str) -> str:
    return subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True,
                          text=True, check=True).stdout


def validate(args, stdin=None):
    out = subprocess.run([*VALIDATE, "--strict", "--quiet", *args], input=stdin, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid(version):
    assert len(MANIFESTS) >= 9
    validate(["-k", version, *map(str, MANIFESTS)])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlays_are_valid(overlay, version):
    validate(["-k", version, "-"], render(overlay))


def test_validator_rejects_an_unknown_field():
    bad = yaml.safe_load((K8S / "base" / "service.yaml").read_text())
    bad["spec"]["portz"] = []
    out = subprocess.run([*VALIDATE, "--strict", "-k", VERSIONS[0], "-"], input=yaml.safe_dump(bad),
                         capture_output=True, text=True)
    assert out.returncode != 0


def docs(overlay):
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(render(overlay)) if d}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_is_hardened_and_probed(overlay):
    d = docs(overlay)
    assert {k for k, _ in d} >= {"Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                                 "PodDisruptionBudget", "NetworkPolicy"}
    assert not [k for k in d if k[0] == "Secret"]      # created by hand; a template would overwrite it
    dep = d["Deployment", "safetyvlm"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert "/tmp" in mounts and all("emptyDir" in vols[n] for n in mounts.values())
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["ports"][0]["containerPort"] == 3000
    assert c["resources"]["requests"] and c["resources"]["limits"]
    secret_refs = [e["secretRef"] for e in c["envFrom"] if "secretRef" in e]
    assert secret_refs == [{"name": "safetyvlm-auth", "optional": True}]
    gpu = c["resources"]["limits"].get("nvidia.com/gpu")
    assert gpu == ("1" if overlay == "gpu" else None)
    hpa = d["HorizontalPodAutoscaler", "safetyvlm"]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["name"] == "safetyvlm"
    # selectors of the Service, PDB and policy match the pods
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for sel in (d["Service", "safetyvlm"]["spec"]["selector"],
                d["PodDisruptionBudget", "safetyvlm"]["spec"]["selector"]["matchLabels"],
                d["NetworkPolicy", "safetyvlm-allow-http"]["spec"]["podSelector"]["matchLabels"]):
        assert sel.items() <= labels.items()
    deny = d["NetworkPolicy", "safetyvlm-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny
    allow = d["NetworkPolicy", "safetyvlm-allow-http"]["spec"]["ingress"]
    assert allow == [{"ports": [{"port": 3000, "protocol": "TCP"}]}]
    assert all(doc["metadata"].get("namespace") == "safetyvlm" for k, doc in d.items() if k[0] != "Namespace")


def test_secret_template_has_no_value():
    secret = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    assert secret["kind"] == "Secret" and set(secret["stringData"].values()) == {""}
