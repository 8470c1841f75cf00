"""The TrainJob launcher: objects valid against the Kubeflow Trainer CRD; create/wait logic.

No Kubernetes API server runs here: ``FakeCustomObjects`` stands in for the API
(``kubernetes.client.CustomObjectsApi``'s create/get methods) and plays back statuses.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from aicd.components._images import TRAIN_IMAGE
from aicd.components.errors import TrainingError
from aicd.components.spec import parse_spec
from aicd.components.training.launcher import launch_trainjob, train_adapter_args, trainjob_manifest

VALIDATE = Path(__file__).resolve().parents[2] / "tools" / "validate-manifests"


def _manifest(spec: dict, **kw) -> dict:
    parsed = parse_spec(spec)
    args = train_adapter_args(parsed, "lora-r8", "pvc://aicd-checkpoints/datasets/v1", "pvc://aicd-checkpoints/models/lora-r8")
    return trainjob_manifest(parsed, "support-bot-lora-r8", args, **kw)


def _validate(manifests: list[dict]) -> subprocess.CompletedProcess:
    """One run of the validator over several documents (it takes seconds to start)."""
    return subprocess.run([sys.executable, str(VALIDATE), "-"], input=yaml.safe_dump_all(manifests),
                          capture_output=True, text=True)


RESOURCES = [
    ({"gpus": 1, "gpu_type": "nvidia-l4"}, "aicd-checkpoints"),
    ({"gpus": 4, "num_nodes": 2, "procs_per_node": 4, "cpu": "16", "memory": "64Gi"}, "aicd-checkpoints"),
    ({"gpus": 0, "num_nodes": 2, "procs_per_node": 2}, None),
]


def test_trainjobs_validate_against_the_crd(support_bot_spec):
    manifests = []
    for i, (resources, claim) in enumerate(RESOURCES):
        support_bot_spec["training"]["resources"] = resources
        manifest = _manifest(support_bot_spec, claim=claim)
        manifest["metadata"]["name"] += f"-{i}"
        manifests.append(manifest)
        trainer = manifest["spec"]["trainer"]
        assert trainer["image"] == TRAIN_IMAGE
        assert trainer["numNodes"] == resources.get("num_nodes", 1)
        assert trainer["numProcPerNode"] == resources.get("procs_per_node", 1)
        assert trainer["command"] == ["python", "-m", "aicd.components.training"]
        assert trainer["args"][:1] == ["train-adapter"] and "--spec-json" in trainer["args"]
        assert trainer["resourcesPerNode"]["limits"].get("nvidia.com/gpu", 0) == resources["gpus"]
    # Control: a misspelt field must be rejected, so the validator really checks the schema.
    bad = _manifest(support_bot_spec)
    bad["metadata"]["name"] = "misspelt"
    bad["spec"]["trainer"]["numNode"] = 2
    proc = _validate(manifests + [bad])
    assert proc.returncode == 1 and "4 checked, 1 invalid, 0 not checked" in proc.stdout, proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if "TrainJob/" in line]
    assert errors == ["<stdin>: TrainJob/misspelt.spec.trainer: unknown field `numNode`"], proc.stdout


class FakeCustomObjects:
    """Stands in for the Kubernetes API (CustomObjectsApi): records creates, plays back statuses."""

    def __init__(self, statuses: list[dict], create_error: ApiException | None = None):
        self.statuses, self.create_error = list(statuses), create_error
        self.created, self.gets = [], 0

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        if self.create_error:
            raise self.create_error
        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        self.created.append((namespace, body))
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.gets += 1
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"metadata": {"name": name, "namespace": namespace}, "status": status}


def _cond(kind: str, reason: str = "", message: str = "") -> dict:
    return {"conditions": [{"type": kind, "status": "True", "reason": reason, "message": message}]}


def _progress(pct: int) -> dict:
    return {"trainerStatus": {"progressPercentage": pct, "lastUpdatedTime": "2026-01-01T00:00:00Z",
                              "metrics": [{"name": "loss", "value": "1.5"}]}}


def test_launch_waits_and_reports_progress(support_bot_spec):
    api = FakeCustomObjects([{}, _progress(40), _progress(90), {**_progress(100), **_cond("Complete")}])
    seen = []
    status = launch_trainjob(api, _manifest(support_bot_spec), on_progress=seen.append, sleep=lambda s: None)
    assert api.created[0][0] == "aicd" and api.created[0][1]["kind"] == "TrainJob"
    assert [p["progressPercentage"] for p in seen] == [40, 90, 100]
    assert status["conditions"][0]["type"] == "Complete" and api.gets == 4


def test_launch_failure_names_the_reason(support_bot_spec):
    api = FakeCustomObjects([_progress(10), _cond("Failed", "BackoffLimitExceeded", "node-0 exited with 1")])
    with pytest.raises(TrainingError, match="TrainJob aicd/support-bot-lora-r8 failed: BackoffLimitExceeded: "
                                            "node-0 exited with 1") as err:
        launch_trainjob(api, _manifest(support_bot_spec), sleep=lambda s: None)
    assert "kubectl logs -n aicd" in str(err.value)


def test_retry_follows_the_existing_job(support_bot_spec):
    api = FakeCustomObjects([_cond("Complete")], ApiException(status=409, reason="AlreadyExists"))
    assert launch_trainjob(api, _manifest(support_bot_spec), sleep=lambda s: None)["conditions"]


@pytest.mark.parametrize("status, message", [
    (404, "HTTP 404 Not Found\n  fix: install Kubeflow Trainer"),
    (403, "HTTP 403 Forbidden\n  fix: the service account needs `create` on trainjobs.trainer.kubeflow.org"),
])
def test_create_errors_say_what_to_fix(support_bot_spec, status, message):
    reason = {404: "Not Found", 403: "Forbidden"}[status]
    api = FakeCustomObjects([{}], ApiException(status=status, reason=reason))
    with pytest.raises(TrainingError, match=message):
        launch_trainjob(api, _manifest(support_bot_spec), sleep=lambda s: None)


def test_timeout(support_bot_spec):
    clock = iter(range(0, 10_000, 100))
    api = FakeCustomObjects([_progress(5)])
    with pytest.raises(TrainingError, match="did not finish within 300 s"):
        launch_trainjob(api, _manifest(support_bot_spec), timeout_seconds=300, sleep=lambda s: None,
                        clock=lambda: next(clock))
