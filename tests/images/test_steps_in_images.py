"""Real steps run from the compiled IR (`aicd compile`) inside their role images, as a pod
runs them: the IR's command and image, `--network none --read-only`, a writable /tmp,
uid 10001, the pipeline root and the spec's local model bind-mounted.

base: ingest-dataset reads the offline corpus from the image's package (pkg://) and writes
the data set; train: train-adapter fine-tunes the tiny model on that data set. The serve
role runs no step (it is the predictor: test_serve_image.py). A step that fails inside
its container is reported as failed.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ir_steps import load_ir, run_ir_step
from podman_tools import ROOT, chown_tree
from tiny_models import tiny_finetune_spec

from aicd.components.spec import parse_spec
from aicd.pipelines.stages import pipeline_arguments

pytestmark = pytest.mark.images


def readable_copy(model: Path, target: Path) -> Path:
    """The model folder as a volume the pod's user can read (pytest's own folders are private to root)."""
    shutil.copytree(model, target)
    chown_tree(target)
    return target


@pytest.fixture(scope="module")
def finetune_ir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ir")
    subprocess.run([str(ROOT / ".venv" / "bin" / "aicd"), "compile", "finetune", "--out", str(out)], check=True,
                   capture_output=True)
    return out / "finetune.yaml"


@pytest.fixture
def pod_root(tmp_path) -> Path:
    root = tmp_path / "pipeline-root"
    root.mkdir()
    chown_tree(root)
    return root


@pytest.fixture
def tiny_spec(support_bot_spec, tiny_causal_lm, tmp_path) -> dict:
    spec = tiny_finetune_spec(support_bot_spec, tiny_causal_lm, tmp_path / "spec", ROOT / "manifests")
    spec["training"]["checkpoint"]["root"] = "/tmp/ckpt"  # the pod's writable /tmp
    return pipeline_arguments(parse_spec(spec))


def test_base_and_train_steps_run_from_the_ir_in_their_images(role_images, finetune_ir, tiny_spec, tiny_causal_lm,
                                                               pod_root):
    ir = load_ir(finetune_ir)
    model_mount = {str(readable_copy(tiny_causal_lm, pod_root.parent / "model")): f"{tiny_causal_lm}:ro"}

    ingest = run_ir_step(ir, "ingest-dataset", tiny_spec, pod_root, mounts=model_mount)
    assert ingest.image == role_images["base"]
    assert ingest.command[:2] == ["sh", "-ec"] and "pip install" not in " ".join(ingest.command)
    assert ingest.returncode == 0, ingest.log[-4000:]
    dataset = ingest.outputs["dataset"]
    card = json.loads((Path(dataset.path) / "card.json").read_text())
    train_rows = pq.read_table(Path(dataset.path) / "train.parquet").num_rows
    assert card["counts"]["train"] == train_rows > 0

    train = run_ir_step(ir, "train-adapter", tiny_spec, pod_root, extra={"dataset": dataset, "method": "lora-r4"},
                        mounts=model_mount)
    assert train.image == role_images["train"]
    assert train.returncode == 0, train.log[-4000:]
    result = json.loads(train.outputs["Output"])
    adapter = Path(train.outputs["model"].path)
    assert result["method"] == "lora-r4" and result["digest"] == train.outputs["model"].metadata["digest"]
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "card.json").is_file()
    assert (adapter / "adapter_model.safetensors").stat().st_uid == 10001  # written by the pod's user


def test_a_step_failing_in_its_container_is_reported_failed(role_images, finetune_ir, tiny_spec, pod_root):
    """The model path is not mounted: the step cannot find it, exits non-zero, and says why."""
    ir = load_ir(finetune_ir)
    ingest = run_ir_step(ir, "ingest-dataset", tiny_spec, pod_root)
    assert ingest.returncode == 0, ingest.log[-4000:]
    train = run_ir_step(ir, "train-adapter", tiny_spec, pod_root, extra={"dataset": ingest.outputs["dataset"]})
    assert train.returncode != 0
    assert "does not exist" in train.log and train.outputs == {}
