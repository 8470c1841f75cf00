"""The TrainJob engine in the compiled IR: selected by the profile, a light launcher task with the claim."""

from pathlib import Path

import pytest
import yaml
from helpers.ir import base, tasks

from aicd.components.errors import SpecError
from aicd.pipelines.platform import Platform
from aicd.pipelines.profiles import load_profile, parse_profile
from aicd.pipelines.stages import build_pipeline
from aicd.pipelines.submit import compile_pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("ir")
    docs = {}
    for profile in ("trainjob-cluster", "gpu-cluster"):
        platform = Platform(load_profile(ROOT / "examples" / "profiles" / f"{profile}.yaml"))
        for name in ("finetune", "continuous", "redesign"):
            path = compile_pipeline(build_pipeline(name, platform), out / f"{profile}-{name}.yaml")
            docs[profile, name] = list(yaml.safe_load_all(path.read_text()))
    return docs


STEP = {"finetune": "train-adapter", "continuous": "train-adapter", "redesign": "train-from-scratch"}


@pytest.mark.parametrize("name", sorted(STEP))
def test_trainjob_profile_trains_through_trainer(compiled, name):
    ir, platform = compiled["trainjob-cluster", name]
    names = {base(c) for c, _, _ in tasks(ir)}
    step = STEP[name] + "-trainjob"
    assert step in names and STEP[name] not in names
    spec = next(s for c, s, _ in tasks(ir) if base(c) == step)
    params = spec["inputs"]["parameters"]
    assert params["claim"]["runtimeValue"]["constant"] == "aicd-checkpoints"
    assert params["deadline_seconds"]["runtimeValue"]["constant"] == 86400
    assert params["runtime"]["runtimeValue"]["constant"] == "torch-distributed"
    executors = ir["deploymentSpec"]["executors"]
    label = ir["components"][f"comp-{step}"]["executorLabel"]
    assert "accelerator" not in executors[label]["container"].get("resources", {})  # the job has the GPUs
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][label]
    assert {m["mountPath"] for m in k8s["pvcMount"]} >= {"/mnt/pvc/aicd-checkpoints"}


@pytest.mark.parametrize("name", sorted(STEP))
def test_pod_profile_trains_in_the_step(compiled, name):
    names = {base(c) for c, _, _ in tasks(compiled["gpu-cluster", name][0])}
    assert STEP[name] in names and STEP[name] + "-trainjob" not in names


@pytest.mark.parametrize("roles, volumes, problem", [
    ({"evaluate": {"engine": "trainjob"}}, [], "`roles.evaluate.engine` is trainjob; only roles.train has an engine"),
    ({"train": {"engine": "trainjob"}}, [], "`roles.train.engine` is trainjob but no claim holds its data and "
                                            "checkpoints; set `roles.train.trainjob_claim` or add a volume"),
])
def test_bad_engine_settings_are_named(roles, volumes, problem):
    with pytest.raises(SpecError) as err:
        parse_profile({"name": "p", "roles": roles, "volumes": volumes})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


@pytest.mark.parametrize("method, command", [("lora-r8", "train-adapter"), (None, "train-from-scratch")])
def test_trainjob_plan(support_bot_spec, tmp_path, method, command):
    """The TrainJob a step creates: the entry point's command, everything on the claim as pvc:// URIs
    (mounted at /mnt/pvc/<claim> in every process), the deadline, and a name that is a digest of the inputs."""
    import json

    from aicd.components.spec import parse_spec
    from aicd.components.training.trainjob import plan

    (tmp_path / "card.json").write_text(json.dumps({"fingerprint": "fp-1"}))
    spec = parse_spec(support_bot_spec)
    manifest, work = plan(spec, tmp_path, method, "ckpt", deadline_seconds=600)
    args = manifest["spec"]["trainer"]["args"]
    name = manifest["metadata"]["name"]
    assert args[0] == command and f"pvc://ckpt/aicd-trainjobs/{name}/dataset" in args
    assert args[args.index("--checkpoint-root") + 1] == f"pvc://ckpt/aicd-trainjobs/{name}/checkpoints"
    assert manifest["spec"]["activeDeadlineSeconds"] == 600
    assert work.parts[-3:] == ("ckpt", "aicd-trainjobs", name)
    assert plan(spec, tmp_path, method, "ckpt")[0]["metadata"]["name"] == name       # a retry: the same job
    (tmp_path / "card.json").write_text(json.dumps({"fingerprint": "fp-2"}))
    assert plan(spec, tmp_path, method, "ckpt")[0]["metadata"]["name"] != name       # new data: a new job
