"""Every Kubernetes manifest, and each kustomize overlay once rendered, against the official schemas
(kubernetes-validate --strict, offline), plus the properties the deployment promises."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from safetyvlm.serve.config import ServeConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
VERSIONS = ["1.34.0", "1.35.0"]
OVERLAYS = ["cpu", "gpu"]
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml" and not p.name.endswith("-patch.yaml"))
INGRESS_NAMESPACE = {"kubernetes.io/metadata.name": "ingress-nginx"}
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
    assert secret_refs == [{"name": "safetyvlm-auth", "optional": False}]   # no Secret, no pod
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
    assert allow == [{"from": [{"namespaceSelector": {"matchLabels": INGRESS_NAMESPACE}}],
                      "ports": [{"port": 3000, "protocol": "TCP"}]}]
    assert all(doc["metadata"].get("namespace") == "safetyvlm" for k, doc in d.items() if k[0] != "Namespace")


def _pod_ingress_sources(d) -> list:
    """Every (from-entry, ports) that any NetworkPolicy admits to the service's pods."""
    out = []
    for (kind, _), doc in d.items():
        if kind == "NetworkPolicy":
            for rule in doc["spec"].get("ingress", []):
                out.append((rule.get("from"), rule.get("ports")))
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_port_3000_only_from_the_ingress_namespace(overlay):
    """No rule admits 'every pod of every namespace': each names its source; the HTTP one is the ingress
    controller's namespace (set in the overlay), the GPU overlay's metrics one Prometheus' pods only."""
    d = docs(overlay)
    sources = _pod_ingress_sources(d)
    assert all(src for src, _ in sources), sources            # an empty `from` admits everything
    for src, _ in sources:
        for peer in src:
            assert "ipBlock" not in peer and peer.get("namespaceSelector", {}).get("matchLabels"), peer
    http = d["NetworkPolicy", "safetyvlm-allow-http"]["spec"]["ingress"]
    assert [p["namespaceSelector"]["matchLabels"] for p in http[0]["from"]] == [INGRESS_NAMESPACE]
    kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    assert "safetyvlm-allow-http" in str(kustomization["patches"])   # the overlay sets the label
    others = [k for k in d if k[0] == "NetworkPolicy"]
    assert set(others) == {("NetworkPolicy", "safetyvlm-default-deny"), ("NetworkPolicy", "safetyvlm-allow-http")} | (
        {("NetworkPolicy", "safetyvlm-allow-metrics")} if overlay == "gpu" else set())
    if overlay == "gpu":
        [rule] = d["NetworkPolicy", "safetyvlm-allow-metrics"]["spec"]["ingress"]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                                 "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]


def _config(d) -> dict:
    [cm] = [doc for (kind, _), doc in d.items() if kind == "ConfigMap"]
    return cm


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_is_generated_so_a_change_rolls_the_pods(overlay):
    d = docs(overlay)
    cm = _config(d)
    name = cm["metadata"]["name"]
    assert name.startswith("safetyvlm-config-") and len(name) > len("safetyvlm-config-")   # a content hash
    [c] = d["Deployment", "safetyvlm"]["spec"]["template"]["spec"]["containers"]
    assert {"configMapRef": {"name": name}} in c["envFrom"]
    assert not (K8S / "base" / "configmap.yaml").exists()


def test_a_config_change_renames_the_configmap(tmp_path):
    """Edit one setting in a copy of the tree: the ConfigMap's name (and so the pod template) changes."""
    kubectl()
    shutil.copytree(K8S, tmp_path / "k8s")
    env = tmp_path / "k8s" / "base" / "serve.env"
    env.write_text(env.read_text().replace("SAFETYVLM_MAX_NEW_TOKENS=400", "SAFETYVLM_MAX_NEW_TOKENS=300"))
    edited = subprocess.run([kubectl(), "kustomize", str(tmp_path / "k8s" / "overlays" / "cpu")],
                            capture_output=True, text=True, check=True).stdout
    before, after = _config(docs("cpu")), [x for x in yaml.safe_load_all(edited) if x and x["kind"] == "ConfigMap"][0]
    assert after["data"]["SAFETYVLM_MAX_NEW_TOKENS"] == "300"
    assert after["metadata"]["name"] != before["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_stopping_pod_finishes_its_requests_and_spreads_over_nodes(overlay):
    d = docs(overlay)
    cfg = _config(d)["data"]
    pod = d["Deployment", "safetyvlm"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 5
    # the preStop pause, then the drain, then the longest request must all fit before the SIGKILL
    needed = pause + int(cfg["SAFETYVLM_DRAIN_S"]) + int(cfg["SAFETYVLM_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > needed
    [spread] = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    labels = d["Deployment", "safetyvlm"]["spec"]["template"]["metadata"]["labels"]
    assert spread["labelSelector"]["matchLabels"].items() <= labels.items()
    strategy = d["Deployment", "safetyvlm"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_disruption_budget_never_blocks_a_node_drain(overlay):
    """At the fewest replicas the Deployment and the HPA allow, the PDB still lets one pod be evicted."""
    d = docs(overlay)
    pdb = d["PodDisruptionBudget", "safetyvlm"]["spec"]
    hpa = d["HorizontalPodAutoscaler", "safetyvlm"]["spec"]
    fewest = min(d["Deployment", "safetyvlm"]["spec"]["replicas"], hpa["minReplicas"])
    if "maxUnavailable" in pdb:
        allowed = min(int(pdb["maxUnavailable"]), fewest)
    else:
        allowed = fewest - int(pdb["minAvailable"])
    assert allowed >= 1, (overlay, pdb, fewest)
    assert fewest >= 2   # and one pod still serves while the other is evicted
    assert d["Deployment", "safetyvlm"]["spec"]["replicas"] == hpa["minReplicas"]


def test_the_gpu_overlay_scales_on_in_flight_requests_with_its_adapter_written_down():
    hpa = docs("gpu")["HorizontalPodAutoscaler", "safetyvlm"]["spec"]
    assert all(m["type"] != "Resource" for m in hpa["metrics"])               # not on CPU (nor memory)
    [metric] = hpa["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    name = metric["pods"]["metric"]["name"]
    adapter = yaml.safe_load((K8S / "overlays" / "gpu" / "prometheus-adapter-config.yaml").read_text())
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    [rule] = [r for r in rules if r["name"]["as"] == name]
    # the series is the service's own gauge, as /metrics exposes it (tests/test_serve_faults.py reads it)
    assert rule["seriesQuery"].startswith("bentoml_service_request_in_progress{")
    assert "/analyze" in rule["metricsQuery"]
    assert "prometheus-adapter-config.yaml" in (K8S / "overlays" / "gpu" / "kustomization.yaml").read_text()


def test_secret_template_has_no_value():
    secret = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    assert secret["kind"] == "Secret" and set(secret["stringData"].values()) == {""}


def serve_env() -> dict:
    """k8s/base/serve.env (the ConfigMap's source) as the environment the pods get."""
    lines = (K8S / "base" / "serve.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def nginx_size(value: str) -> int:
    m = re.fullmatch(r"(\d+)([kmg]?)", value.strip().lower())
    assert m, f"not an nginx size: {value!r}"
    return int(m[1]) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m[2]]


def test_ingress_body_size_lies_between_the_service_limit_and_its_linger():
    """nginx (request buffering on) reads a body up to proxy-body-size, then sends it to the pod. At least
    the service's largest body, or nginx refuses bodies the service takes (with its own, non-JSON 413);
    at most linger_bytes, or the service stops reading a refused body that nginx is still sending and
    resets it, which nginx turns into a 502 instead of the service's 413."""
    cfg = load_config(environ=serve_env())
    ingress = yaml.safe_load((K8S / "extras" / "ingress.yaml").read_text())
    proxy = nginx_size(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"])
    print(f"\nservice body limit {cfg.request_body_limit()} <= proxy-body-size {proxy} <= linger_bytes "
          f"{cfg.linger_bytes}")
    assert cfg.request_body_limit() <= proxy <= cfg.linger_bytes
    assert nginx_size("16m") == 16 * 2**20 and nginx_size("0") == 0  # 0 is nginx's "no limit": fails above


def test_reliability_doc_lists_each_limit_with_its_setting_and_default():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    defaults = ServeConfig()
    for name in ("max_body_bytes", "max_pixels", "body_timeout_s", "linger_s", "linger_bytes", "timeout_s",
                 "max_concurrency", "drain_s"):
        row = next((line for line in doc.splitlines() if f"`SAFETYVLM_{name.upper()}`" in line), None)
        assert row is not None, f"docs/reliability.md has no row for SAFETYVLM_{name.upper()}"
        assert f"`{getattr(defaults, name)}`" in row or (getattr(defaults, name) is None and "unset" in row), row
    assert "proxy-body-size" in doc and "reliability.md" in (ROOT / "docs" / "serving.md").read_text()
