"""Training through Kubeflow Trainer: the step's TrainJob in a real kube-apiserver, its command under torchrun.

Real parts: kube-apiserver 1.20.2 with the Trainer TrainJob CRD (the object is created and
validated by the server), the training entry point run by torchrun with 2 CPU processes (gloo)
on a tiny random model, exactly with the command, arguments and environment the TrainJob declares.
Stand-ins: no Trainer controller runs here, so the test plays it (a thread that runs the job's
command with torchrun, one node, ``numProcPerNode`` processes, and writes the Complete condition);
the claim is a local folder (``AICD_PVC_ROOT``) as the pod's mount would be.
"""

import contextlib
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml
from delivery_world import ROOT

from aicd.components.cards import verify_card
from aicd.components.data.format import write_dataset
from aicd.components.spec import parse_spec
from aicd.components.training.launcher import GROUP, PLURAL, VERSION
from aicd.components.training.trainjob import plan, train_on_trainjob

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NAMESPACE = "training"
QA = [("What is AI?", "The study of machines that think."), ("Hello?", "Hi, how can I help?"),
      ("Do you ship abroad?", "Yes, to most countries."), ("Reset my password", "Use the forgot-password link.")]


def play_trainer(api, pvc_root, halt: threading.Event, runs: list) -> None:
    """Trainer's part: run each new TrainJob's command under torchrun, then write its terminal condition."""
    while not halt.is_set():
        for job in api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]:
            if (job.get("status") or {}).get("conditions"):
                continue
            trainer = job["spec"]["trainer"]
            assert trainer["command"] == ["python", "-m", "aicd.components.training"]
            env = {**os.environ, **{e["name"]: e["value"] for e in trainer["env"]}, "AICD_PVC_ROOT": str(pvc_root),
                   "OMP_NUM_THREADS": "1"}
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(trainer["numNodes"]),
                   "--nproc_per_node", str(trainer["numProcPerNode"]), "-m", "aicd.components.training",
                   *trainer["args"]]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            runs.append((job["metadata"]["name"], proc.returncode, proc.stderr[-3000:]))
            done = {"type": "Complete", "status": "True", "reason": "JobCompleted", "message": "done"} \
                if proc.returncode == 0 else {"type": "Failed", "status": "True", "reason": "JobFailed",
                                              "message": proc.stderr[-300:]}
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            api.patch_namespaced_custom_object_status(GROUP, VERSION, NAMESPACE, PLURAL, job["metadata"]["name"], {
                "status": {"conditions": [{**done, "lastTransitionTime": now}]}})
        halt.wait(0.5)


@contextlib.contextmanager
def trainer_playing(api, pvc, monkeypatch):
    """The claim as a local folder (AICD_PVC_ROOT) and the stand-in Trainer controller running; yields the
    list of (job, exit code, stderr) it ran."""
    (pvc / "aicd-checkpoints").mkdir(parents=True)
    monkeypatch.setenv("AICD_PVC_ROOT", str(pvc))
    halt, runs = threading.Event(), []
    trainer = threading.Thread(target=play_trainer, args=(api, pvc, halt, runs))
    trainer.start()
    try:
        yield runs
    finally:
        halt.set()
        trainer.join()


@pytest.fixture
def cluster(kube_apiserver, tmp_path, tiny_causal_lm):  # noqa: F811
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(kube_apiserver.kubeconfig))
    kube_apiserver.ensure_namespace(NAMESPACE)
    raw = yaml.safe_load((ROOT / "examples/support-bot/spec.yaml").read_text())
    raw["candidates"][0]["uri"] = str(tiny_causal_lm)
    raw["training"].update({"max_steps": 2, "batch_size": 2, "packing": False,
                            "methods": [{"name": "lora", "method": "lora", "r": 4, "target_modules": ["q_proj"]}],
                            "resources": {"num_nodes": 1, "procs_per_node": 2, "gpus": 0, "cpu": "1",
                                          "memory": "2Gi"}})
    rows = [{"id": f"q{i}", "instruction": q, "response": a} for i, (q, a) in enumerate(QA * 4)]
    write_dataset(tmp_path / "ds", {"train": rows, "validation": rows[:4], "test": rows[:4]}, fingerprint="fp-tj",
                  task="causal-lm")
    return client.CustomObjectsApi(api_client), parse_spec(raw), tmp_path


def test_method_trains_as_a_trainjob_under_torchrun_and_a_retry_follows_the_same_job(cluster, monkeypatch):
    api, spec, tmp = cluster
    pvc = tmp / "pvc"
    with trainer_playing(api, pvc, monkeypatch) as runs:
        summary = train_on_trainjob(spec, api, tmp / "ds", "lora", tmp / "out", claim="aicd-checkpoints",
                                    namespace=NAMESPACE, deadline_seconds=3600, poll_seconds=0.5)
        again = train_on_trainjob(spec, api, tmp / "ds", "lora", tmp / "out2", claim="aicd-checkpoints",
                                  namespace=NAMESPACE, deadline_seconds=3600, poll_seconds=0.5)
    assert len(runs) == 1 and runs[0][1] == 0, runs      # the retry found the finished job: nothing re-ran
    assert summary["steps"] == 2 and again == summary
    card = verify_card(tmp / "out")
    assert card["kind"] == "adapter" and verify_card(tmp / "out2")["digest"] == card["digest"]
    job = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, runs[0][0])
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    assert (job["spec"]["trainer"]["numNodes"], job["spec"]["trainer"]["numProcPerNode"]) == (1, 2)
    assert job["spec"]["trainer"]["resourcesPerNode"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    mounts = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert mounts["template"]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "aicd-checkpoints"}
    assert any((pvc / "aicd-checkpoints/aicd-trainjobs" / runs[0][0] / "checkpoints").iterdir())


def test_a_failed_trainjob_names_the_failure(cluster, monkeypatch):
    from aicd.components.errors import TrainingError

    api, spec, tmp = cluster
    bad = parse_spec({**spec.model_dump(mode="json", exclude_none=True),
                      "candidates": [{"name": "gone", "uri": str(tmp / "no-such-model")}]})
    manifest, _ = plan(bad, tmp / "ds", "lora", "aicd-checkpoints", namespace=NAMESPACE)
    with trainer_playing(api, tmp / "pvc", monkeypatch), \
            pytest.raises(TrainingError, match=f"TrainJob {NAMESPACE}/{manifest['metadata']['name']} failed: "
                                               "JobFailed"):
        train_on_trainjob(bad, api, tmp / "ds", "lora", tmp / "out", claim="aicd-checkpoints",
                          namespace=NAMESPACE, deadline_seconds=600, poll_seconds=0.5)
    assert not (tmp / "out").exists()


def test_model_from_scratch_trains_as_a_trainjob_under_torchrun(cluster, monkeypatch):
    """Stage 4 through the same engine: method None is `train-from-scratch` in the job, 2 processes."""
    from aicd.components.models import load_model_artifact

    api, spec, tmp = cluster
    arch = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, "vocab_size": 300,
            "max_position_embeddings": 256}
    scratch = parse_spec({**spec.model_dump(mode="json", exclude_none=True),
                          "training": {**spec.training.model_dump(mode="json", exclude_none=True),
                                       "max_steps": 4, "from_scratch": arch}})
    with trainer_playing(api, tmp / "pvc", monkeypatch) as runs:
        summary = train_on_trainjob(scratch, api, tmp / "ds", None, tmp / "out", claim="aicd-checkpoints",
                                    namespace=NAMESPACE, deadline_seconds=3600, poll_seconds=0.5)
    assert len(runs) == 1 and runs[0][1] == 0, runs
    assert "-scratch-" in runs[0][0], runs[0][0]
    job = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, runs[0][0])
    assert job["spec"]["trainer"]["args"][0] == "train-from-scratch"
    assert job["spec"]["trainer"]["numProcPerNode"] == 2
    assert summary["steps"] == 4
    model, tokenizer, card = load_model_artifact(tmp / "out")
    assert card["kind"] == "model" and card["method"] == "from-scratch"
    assert model.config.num_hidden_layers == 2 and len(tokenizer) == model.config.vocab_size
