"""The TrainJob launcher against the real kube-apiserver, as the pipeline's service account.

The base manifests (service accounts, Role, RoleBinding) are applied into a fresh namespace; the
launcher creates the TrainJob through the API as system:serviceaccount:<ns>:aicd-pipeline
(impersonated) and follows it. No Kubeflow Trainer controller runs here: the test plays it,
writing the TrainJob's status (progress, then Complete or Failed) through the status subresource.
"""

import secrets
import threading
import time

import pytest
from kube_overlays import MANIFESTS, in_namespace

from aicd.components.errors import TrainingError
from aicd.components.spec import parse_spec
from aicd.components.training.launcher import (
    DEFAULT_CLAIM,
    GROUP,
    PLURAL,
    VERSION,
    launch_trainjob,
    train_adapter_args,
    trainjob_manifest,
    trainjob_name,
)

pytestmark = pytest.mark.kube


@pytest.fixture
def namespace(kube_apiserver, tmp_path) -> str:
    """A fresh namespace holding the base's accounts and RBAC (and everything else of the base)."""
    ns = f"train-{secrets.token_hex(4)}"
    kube_apiserver.kubectl("apply", "--server-side", "-k", str(in_namespace(MANIFESTS / "base", ns, tmp_path / "kz")))
    return ns


def _manifest(spec_data: dict, namespace: str) -> dict:
    spec = parse_spec(spec_data)
    args = train_adapter_args(spec, "lora-r8", f"pvc://{DEFAULT_CLAIM}/datasets/v1", f"pvc://{DEFAULT_CLAIM}/out")
    return trainjob_manifest(spec, trainjob_name(spec, "lora-r8", args), args, namespace=namespace, claim=DEFAULT_CLAIM)


class TrainerController:
    """Plays Kubeflow Trainer: waits for the TrainJob, then writes progress and a final condition."""

    def __init__(self, api, namespace: str, name: str, final: dict):
        self.api, self.namespace, self.name, self.final = api, namespace, name, final
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.seen: dict | None = None

    def run(self) -> None:
        from kubernetes import watch

        stream = watch.Watch().stream(self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                                      field_selector=f"metadata.name={self.name}", timeout_seconds=60)
        for event in stream:
            self.seen = event["object"]
            break
        for status in ({"trainerStatus": {"progressPercentage": 50, "metrics": [{"name": "loss", "value": "1.2"}]}},
                       self.final):
            self.api.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, PLURAL, self.name,
                                                           {"status": status})
            time.sleep(1.0)  # the launcher polls every 0.2 s: it sees each status


def _condition(kind: str, reason: str, message: str) -> dict:
    return {"conditions": [{"type": kind, "status": "True", "reason": reason, "message": message,
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}


def test_launcher_creates_and_follows_a_trainjob(kube_apiserver, namespace, support_bot_spec):
    from kubernetes import client

    manifest = _manifest(support_bot_spec, namespace)
    name = manifest["metadata"]["name"]
    admin = client.CustomObjectsApi(kube_apiserver.api_client())
    trainer = TrainerController(admin, namespace, name, _condition("Complete", "JobsCompleted", "all nodes done"))
    trainer.thread.start()
    pipeline = client.CustomObjectsApi(kube_apiserver.api_client(f"system:serviceaccount:{namespace}:aicd-pipeline"))
    progress = []
    status = launch_trainjob(pipeline, manifest, poll_seconds=0.2, timeout_seconds=60, on_progress=progress.append)
    trainer.thread.join(10)

    assert status["conditions"][0]["type"] == "Complete"
    assert [p["progressPercentage"] for p in progress] == [50]
    stored = admin.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert stored["spec"]["trainer"] == manifest["spec"]["trainer"]  # nothing pruned: every field is in the CRD
    assert stored["spec"]["runtimePatches"] == manifest["spec"]["runtimePatches"]
    assert trainer.seen["metadata"]["name"] == name
    # A retry of the step follows the job that exists (409) instead of failing.
    again = launch_trainjob(pipeline, manifest, poll_seconds=0.2, timeout_seconds=10)
    assert again["conditions"][0]["type"] == "Complete"


def test_failed_trainjob_names_the_reason(kube_apiserver, namespace, support_bot_spec):
    from kubernetes import client

    manifest = _manifest(support_bot_spec, namespace)
    admin = client.CustomObjectsApi(kube_apiserver.api_client())
    trainer = TrainerController(admin, namespace, manifest["metadata"]["name"],
                                _condition("Failed", "BackoffLimitExceeded", "node-0 exited with 1"))
    trainer.thread.start()
    pipeline = client.CustomObjectsApi(kube_apiserver.api_client(f"system:serviceaccount:{namespace}:aicd-pipeline"))
    with pytest.raises(TrainingError, match="failed: BackoffLimitExceeded: node-0 exited with 1"):
        launch_trainjob(pipeline, manifest, poll_seconds=0.2, timeout_seconds=60)
    trainer.thread.join(10)


@pytest.mark.parametrize("account", ["aicd-predictor", "aicd-canary"])
def test_forbidden_create_names_the_missing_permission(kube_apiserver, namespace, support_bot_spec, account):
    from kubernetes import client

    manifest = _manifest(support_bot_spec, namespace)
    api = client.CustomObjectsApi(kube_apiserver.api_client(f"system:serviceaccount:{namespace}:{account}"))
    with pytest.raises(TrainingError) as err:
        launch_trainjob(api, manifest, poll_seconds=0.2, timeout_seconds=5)
    text = str(err.value)
    assert "HTTP 403 Forbidden" in text and f"system:serviceaccount:{namespace}:{account}" in text, text
    assert f"needs `create` on trainjobs.trainer.kubeflow.org in namespace {namespace}" in text, text
