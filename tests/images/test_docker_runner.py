"""The finetune pipeline end to end under kfp.local.DockerRunner through podman's
Docker-compatible socket: every step in its role image, pod-like (pipelines/containers.py),
with the subprocess runner's results (the same data set, plan and gate decision, and the same
adapter files byte for byte); and a step failing in its container fails
the run (podman 4.3.1 loses the exit code of auto-removed containers; containers.py keeps
the container until its code is read)."""

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from podman_tools import ROOT, chown_tree, engine_env, require
from tiny_models import tiny_finetune_spec

from aicd.components.cards import read_card
from aicd.components.spec import parse_spec
from aicd.pipelines.cache import run_outputs
from aicd.pipelines.local import PipelineRunError, run_local
from aicd.pipelines.stages import build_pipeline, pipeline_arguments

pytestmark = [pytest.mark.images, pytest.mark.slow]
# Outputs that must be identical under both runners: the data set, the plan and the decisions.
EXACT = ["ingest-dataset.dataset", "list-methods.Output", "choose-method.chosen", "find-champion.Output",
         "gate-candidate.Output"]


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory):
    """podman's Docker-compatible API on a socket of its own; DOCKER_HOST points at it; stopped by its PID."""
    require("podman")
    sock = tmp_path_factory.mktemp("podman-api") / "podman.sock"
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], env=engine_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "podman system service did not start"
        time.sleep(0.2)
    before = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{sock}"
    try:
        yield os.environ["DOCKER_HOST"]
    finally:
        if before is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = before
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if proc.poll() is None:
            proc.kill()


def fresh_spec(spec_root: Path, support_bot_spec: dict, tiny_causal_lm: Path) -> dict:
    """The tiny finetune spec with a new GitOps repository and an empty checkpoint folder at the same paths."""
    shutil.rmtree(spec_root, ignore_errors=True)
    spec = tiny_finetune_spec(support_bot_spec, tiny_causal_lm, spec_root, ROOT / "manifests")
    (spec_root / "ckpt").mkdir(parents=True)
    return pipeline_arguments(parse_spec(spec))


def test_finetune_under_docker_runner_equals_the_subprocess_run(role_images, docker_host, support_bot_spec,
                                                                tiny_causal_lm, tmp_path):
    pipeline = build_pipeline("finetune")
    spec_root, model = tmp_path / "spec", tmp_path / "model"
    shutil.copytree(tiny_causal_lm, model)  # pytest's own folders are private to root: a volume the pod reads
    spec = fresh_spec(spec_root, dict(support_bot_spec), model)
    local = run_local(pipeline, spec, tmp_path / "subprocess", cache=False)

    assert fresh_spec(spec_root, dict(support_bot_spec), model) == spec  # same inputs, fresh state
    chown_tree(spec_root)  # the pod's user writes checkpoints and commits
    chown_tree(model)
    docker = run_local(pipeline, spec, tmp_path / "docker", cache=False, runner="docker")

    assert [t.name for t in docker.tasks] == [t.name for t in local.tasks]
    assert all(t.status == "ran" for t in docker.tasks)
    assert docker.task("gate-candidate").outputs["Output"] is True
    assert docker.task("promote-adapter").outputs["Output"]  # committed to the GitOps repository
    model = Path(docker.task("train-adapter").outputs["model"].path)
    assert model.stat().st_uid == 10001  # written inside the train image by the pod's user
    ours, theirs = run_outputs(docker), run_outputs(local)
    assert ours.keys() == theirs.keys()
    for key in EXACT:  # data, plans and decisions: identical
        assert ours[key] == theirs[key], key
    trained, local_trained = (json.loads(r.task("train-adapter").outputs["Output"]) for r in (docker, local))
    assert trained["method"] == local_trained["method"] == "lora-r4"
    for name in ("steps", "trainable_parameters"):
        assert trained["metrics"][name] == local_trained["metrics"][name], name
    # Same data, seed and torch build, and peft's set-valued config fields written sorted
    # (training/runtime.py): the adapter trained in the train image is the subprocess run's, file for file.
    files = [read_card(Path(r.task("train-adapter").outputs["model"].path))["files"] for r in (docker, local)]
    assert files[0] == files[1], [f for f in files[0] if files[0][f] != files[1].get(f)]
    for name in ("train_loss_first", "train_loss_final"):
        assert trained["metrics"][name] == local_trained["metrics"][name], name


def test_a_failing_step_fails_the_docker_run(role_images, docker_host, support_bot_spec, tiny_causal_lm, tmp_path):
    """The base model's folder is gone when the steps run: train-adapter exits non-zero in its
    container, and the run says so (kfp 2.17 alone would report it succeeded on podman 4.3.1)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_causal_lm, model)
    spec = fresh_spec(tmp_path / "spec", dict(support_bot_spec), model)
    chown_tree(tmp_path / "spec")
    shutil.rmtree(model)
    with pytest.raises(PipelineRunError, match=r"step (train-adapter|evaluate-model\S*) of pipeline .* failed"):
        run_local(build_pipeline("finetune"), spec, tmp_path / "docker", cache=False, runner="docker")


def test_docker_runner_says_when_an_image_is_not_built(docker_host):
    import docker

    from aicd.components.errors import ImageError
    from aicd.pipelines.containers import run_container

    client = docker.from_env()
    with pytest.raises(ImageError, match="image localhost/aicd-base:never-built is not built here"):
        run_container(client, "localhost/aicd-base:never-built", ["true"], {})
