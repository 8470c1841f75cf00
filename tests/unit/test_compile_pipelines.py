"""Every pipeline compiles, and its IR has the structure delivery and the platform rely on."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.ir import base, tasks

from aicd.components import _images
from aicd.pipelines.platform import Platform
from aicd.pipelines.profiles import load_profile
from aicd.pipelines.stages import PIPELINES, build_pipeline
from aicd.pipelines.submit import compile_pipeline

ROOT = Path(__file__).resolve().parents[2]
GPU_PROFILE = ROOT / "examples" / "profiles" / "gpu-cluster.yaml"
NEVER_CACHED = {"fingerprint-sources", "fingerprint-inputs", "resolve-champion-revision", "promote-adapter",
                "previous-versions", "record-trained-versions", "roll-out-canary", "count-new-pairs"}
TRAINING = ("train-adapter", "train-from-scratch")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("ir")
    platform = Platform(load_profile(GPU_PROFILE))
    docs = {}
    for name in PIPELINES:
        path = compile_pipeline(build_pipeline(name, platform), out / f"{name}.yaml")
        docs[name] = list(yaml.safe_load_all(path.read_text()))
    return docs


@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_compiles_with_one_parameter_per_spec_section(compiled, name):
    ir = compiled[name][0]
    assert ir["pipelineInfo"]["name"] == f"aicd-{name}"
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert params["name"]["parameterType"] == "STRING" and params["candidates"]["parameterType"] == "LIST"
    for section in ("task", "data", "metrics", "training", "delivery", "labeling"):
        assert params[section]["parameterType"] == "STRUCT", section
    assert "spec" not in params
    assert all(p.get("description") for p in params.values()), "every parameter is described for the KFP UI"
    assert any(True for _ in tasks(ir))


@pytest.mark.parametrize("name", PIPELINES)
def test_promote_runs_only_inside_the_gate_condition(compiled, name):
    ir = compiled[name][0]
    promotes = [(spec, conds) for comp, spec, conds in tasks(ir) if base(comp) == "promote-adapter"]
    if name in ("poc", "rollout"):
        assert promotes == []  # stage 1 delivers nothing; the rollout drives a promotion made before
        return
    assert promotes, f"{name} has no promotion"
    for spec, conditions in promotes:
        assert any("gate-candidate-Output" in c and c.endswith("== true") for c in conditions), conditions
        assert spec["inputs"]["artifacts"]["blessing"]


@pytest.mark.parametrize("name", PIPELINES)
def test_gpus_only_on_training_tasks(compiled, name):
    ir = compiled[name][0]
    executors = ir["deploymentSpec"]["executors"]
    for comp, _, _ in tasks(ir):
        resources = executors[ir["components"][f"comp-{comp}"]["executorLabel"]]["container"].get("resources", {})
        wants_gpu = "accelerator" in resources
        assert wants_gpu == base(comp).startswith(TRAINING), comp


@pytest.mark.parametrize("name", PIPELINES)
def test_images_only_from_the_role_table(compiled, name):
    allowed = {_images.image(role) for role in _images.ROLES}
    images = {e["container"]["image"] for e in compiled[name][0]["deploymentSpec"]["executors"].values()}
    assert images and images <= allowed, images - allowed


@pytest.mark.parametrize("name", PIPELINES)
def test_caching_off_exactly_where_it_must_be(compiled, name):
    for comp, spec, _ in tasks(compiled[name][0]):
        cached = spec.get("cachingOptions", {}).get("enableCache", False)
        if base(comp) in NEVER_CACHED:
            assert not cached, comp
        elif base(comp) not in ("import-labels", "collect-feedback", "export-for-labeling"):
            assert cached, comp  # labeling steps read a live Label Studio / payload log: never cached either


def test_compile_cli_writes_every_pipeline_with_registry_and_tag(tmp_path):
    out = tmp_path / "ir"
    result = subprocess.run([sys.executable, "-m", "aicd.pipelines.cli", "compile", "--out", str(out),
                             "--registry", "registry.example.com/ml", "--tag", "v7", "--profile", str(GPU_PROFILE)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in out.glob("*.yaml")) == sorted(PIPELINES)
    for path in out.glob("*.yaml"):
        ir = next(yaml.safe_load_all(path.read_text()))
        images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
        assert images <= {f"registry.example.com/ml/aicd-{r}:v7" for r in _images.ROLES}, images
    assert f"compiled {len(PIPELINES)} pipeline(s) with profile gpu-cluster" in result.stdout


@pytest.mark.parametrize("name", PIPELINES)
def test_no_step_installs_anything_at_pod_start(compiled, name):
    """The images carry kfp and aicd: a compiled executor that runs `pip install` would fail on an
    air-gapped cluster and make every pod start depend on a package index."""
    executors = compiled[name][0]["deploymentSpec"]["executors"]
    for executor_name, executor in executors.items():
        container = executor["container"]
        text = " ".join(container.get("command", []) + container.get("args", []))
        assert "pip install" not in text, f"{name}: {executor_name} installs packages at pod start"


@pytest.mark.parametrize("first_import, fails", [
    ("", False),  # nothing imported yet: the registry applies
    ("import aicd.components._images", True),  # the images are fixed already: a default would slip through
    ("import aicd.pipelines.platform", False),  # no image module behind it
])
def test_the_image_guard_checks_the_module_that_fixes_the_images(first_import, fails):
    """set_image_environment must refuse once aicd.components._images is loaded with other references,
    even when no steps module is (the check used to look only at steps modules)."""
    code = f"""
{first_import}
from aicd.pipelines.submit import set_image_environment
from aicd.components.errors import AicdError
try:
    set_image_environment("registry.example.com/ml", "v7")
except AicdError as err:
    print("refused:", err)
else:
    from aicd.components.data.steps import ingest_dataset
    print("image:", ingest_dataset.component_spec.implementation.container.image)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if not k.startswith("AICD_IMAGE_")})
    assert done.returncode == 0, done.stderr
    if fails:
        assert done.stdout.startswith("refused: the role images were fixed before the image registry/tag was set")
        assert "base -> ghcr.io/aicd/aicd-base:0.1.0" in done.stdout
    else:
        assert done.stdout.strip() == "image: registry.example.com/ml/aicd-base:v7"


@pytest.mark.parametrize("name", ["finetune", "continuous", "redesign", "scoping", "rollout"])
def test_rollout_follows_each_promotion(compiled, name):
    """finetune/continuous/redesign/scoping start the rollout after a successful promotion, with the
    promotion's commit and the blessed digest; the rollout pipeline is that one task."""
    ir = compiled[name][0]
    rollouts = [(spec, conds) for comp, spec, conds in tasks(ir) if base(comp) == "roll-out-canary"]
    assert len(rollouts) == 1, rollouts
    spec, conditions = rollouts[0]
    params = spec["inputs"]["parameters"]
    assert set(params) >= {"delivery", "model_id", "commit"}
    if name != "rollout":
        assert any("gate-candidate-Output" in c for c in conditions), conditions
        assert params["commit"]["taskOutputParameter"]["producerTask"].startswith("promote-adapter")
        assert params["in_stage"]["runtimeValue"]["constant"] is True


def test_continuous_trains_the_methods_the_check_chose(compiled):
    """continuous trains what check-new-data planned (supervised methods on new rows, dpo methods on new
    preference pairs, counted by count-new-pairs from both versions), not a fixed list of every method."""
    ir = compiled["continuous"][0]
    found = {base(comp): (spec, conds) for comp, spec, conds in tasks(ir)}
    assert "list-methods" not in found  # the plan replaces it
    check = found["check-new-data"][0]["inputs"]["parameters"]
    assert check["new_pairs"]["taskOutputParameter"] == {"outputParameterKey": "Output",
                                                        "producerTask": "count-new-pairs"}
    assert set(check) >= {"training", "labeling", "labeled_rows", "feedback_rows", "trained_base"}
    pairs = found["count-new-pairs"][0]["inputs"]
    assert set(pairs["artifacts"]) == {"labeled", "feedback"}
    assert {pairs["parameters"][k]["taskOutputParameter"]["outputParameterKey"]
            for k in ("previous_labels", "previous_feedback")} == {"labels", "feedback"}
    train_spec, train_conditions = found["train-adapter"]
    assert any("check-new-data-Output" in c for c in train_conditions), train_conditions

    def loop_over(dag: dict):  # the ParallelFor around train-adapter, wherever it sits
        for task in dag["tasks"].values():
            inner = ir["components"][task["componentRef"]["name"]]
            if "iteratorPolicy" in task or "parameterIterator" in task:
                yield task
            if "dag" in inner:
                yield from loop_over(inner["dag"])

    loops = list(loop_over(ir["root"]["dag"]))
    assert len(loops) == 1, loops
    items = loops[0]["parameterIterator"]["items"]["inputParameter"]
    upstream = loops[0]["inputs"]["parameters"][items]
    source = upstream.get("componentInputParameter") or upstream["taskOutputParameter"]["outputParameterKey"]
    assert source == "pipelinechannel--check-new-data-methods", upstream


def test_finetune_reads_the_outside_in_one_step_with_the_data_and_deliver_mounts(compiled):
    """fingerprint-inputs, the one step an unchanged finetune re-run runs, reads the sources and the GitOps
    branch: under the GPU profile it gets the deliver role's Git credentials beside the data role's settings."""
    ir, platform = compiled["finetune"][0], compiled["finetune"][1]
    executor = ir["components"]["comp-fingerprint-inputs"]["executorLabel"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][executor]
    assert [(s["secretName"], s["mountPath"]) for s in k8s["secretAsVolume"]] == [
        ("gitops-credentials", "/var/run/secrets/aicd/gitops-credentials")]
    assert "resolve-champion-revision" not in {base(comp) for comp, _, _ in tasks(ir)}
    find = ir["components"]["comp-find-champion"]["inputDefinitions"]["parameters"]
    assert "revision" in find
