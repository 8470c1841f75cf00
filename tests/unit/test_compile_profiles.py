"""Platform profiles: validation with clear errors, and what kfp-kubernetes writes into the IR."""

from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Output

from aicd.components.errors import SpecError
from aicd.pipelines.platform import Platform
from aicd.pipelines.profiles import LOCAL, POD_LABELS, load_profile, parse_profile

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "examples" / "profiles").glob("*.yaml"))


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def make_thing(out: Output[Dataset]):
    pass


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def use_thing(data: Input[Dataset]) -> bool:
    return True


def _compile(platform: Platform, tmp_path: Path) -> tuple[dict, dict]:
    """A two-task pipeline: make_thing as `train`, use_thing as `deliver` with caching off."""

    @dsl.pipeline(name="profile-probe")
    def probe():
        made = platform.apply(make_thing(), "train")
        platform.apply(use_thing(data=made.outputs["out"]), "deliver", cache=False)

    path = tmp_path / "probe.yaml"
    compiler.Compiler().compile(probe, str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    platform_spec = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return docs[0], platform_spec


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_example_profiles_load(path):
    profile = load_profile(path)
    assert profile.name == path.stem


def test_gpu_cluster_profile_in_the_ir(tmp_path):
    ir, k8s = _compile(Platform(load_profile(ROOT / "examples/profiles/gpu-cluster.yaml")), tmp_path)
    executors = ir["deploymentSpec"]["executors"]
    train = executors["exec-make-thing"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    assert "accelerator" not in executors["exec-use-thing"]["container"].get("resources", {})
    assert {e["name"]: e["value"] for e in train["env"]} == {
        "AICD_CACHE": "/mnt/pvc/aicd-model-cache", "AICD_CHECKPOINT_ROOT": "/mnt/pvc/aicd-checkpoints"}
    train_k8s, deliver_k8s = k8s["exec-make-thing"], k8s["exec-use-thing"]
    assert {(m["constant"], m["mountPath"]) for m in train_k8s["pvcMount"]} == {
        ("aicd-model-cache", "/mnt/pvc/aicd-model-cache"), ("aicd-checkpoints", "/mnt/pvc/aicd-checkpoints")}
    assert train_k8s["nodeSelector"]["labels"] == {"aicd.io/pool": "gpu",
                                                   "cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert train_k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "secretAsVolume" not in train_k8s
    assert [(s["secretName"], s["mountPath"]) for s in deliver_k8s["secretAsVolume"]] == [
        ("gitops-credentials", "/var/run/secrets/aicd/gitops-credentials")]
    assert "pvcMount" not in deliver_k8s and "nodeSelector" not in deliver_k8s
    tasks = ir["root"]["dag"]["tasks"]
    assert tasks["make-thing"]["cachingOptions"] == {"enableCache": True}
    assert tasks["use-thing"]["cachingOptions"] == {}  # caching off
    assert tasks["use-thing"]["retryPolicy"]["maxRetryCount"] == 2


def test_local_profile_adds_nothing_but_caching_and_pod_labels(tmp_path):
    ir, k8s = _compile(Platform(LOCAL), tmp_path)
    for executor in ir["deploymentSpec"]["executors"].values():
        assert "resources" not in executor["container"] and "env" not in executor["container"]
    # Pipeline pods always carry the labels the manifests' NetworkPolicy selects (kfp.local ignores them).
    assert k8s == {name: {"podMetadata": {"labels": POD_LABELS}} for name in ("exec-make-thing", "exec-use-thing")}
    assert "retryPolicy" not in ir["root"]["dag"]["tasks"]["make-thing"]


@pytest.mark.parametrize("change, message", [
    ({"roles": {"data": {"gpus": 1}}}, "`roles.data.gpus` is 1, but only training steps get GPUs"),
    ({"roles": {"gpu": {"gpus": 1}}}, "`roles.gpu` is not a known field"),
    ({"roles": {"train": {"gpus": -1}}}, "`roles.train.gpus` must be >= 0, got -1"),
    ({"volumes": [{"claim": "Bad_Claim"}]}, "`volumes.0.claim` must be lowercase letters"),
    ({"volumes": [{"claim": "a"}, {"claim": "a"}]}, "`volumes` lists a more than once"),
    ({"volumes": [{"claim": "a", "purpose": "model-cache"}, {"claim": "b", "purpose": "model-cache"}]},
     "`volumes` has 2 claims with purpose model-cache (a, b); keep one"),
    ({"secrets": [{"name": "s", "roles": ["everyone"]}]}, "`secrets.0.roles.0` must be one of"),
    ({"retries": {"count": 50}}, "`retries.count` must be <= 10, got 50"),
    ({"cachin": False}, "`cachin` is not a known field; remove it or check its spelling"),
])
def test_bad_profiles_name_the_field(change, message):
    with pytest.raises(SpecError) as err:
        parse_profile({"name": "bad", **change}, "bad.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("bad.yaml: ")


@pytest.mark.parametrize("content, message", [
    ("- a list\n", "a platform profile must be a YAML mapping, got list"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_unreadable_profile(tmp_path, content, message):
    path = tmp_path / "p.yaml"
    path.write_text(content)
    with pytest.raises(SpecError, match=message.replace("[", r"\[")):
        load_profile(path)


def test_missing_profile(tmp_path):
    with pytest.raises(SpecError, match="does not exist; pass a profile such as examples/profiles/gpu-cluster.yaml"):
        load_profile(tmp_path / "nope.yaml")
