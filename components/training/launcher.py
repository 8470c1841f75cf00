"""Run training on the cluster as a Kubeflow Trainer TrainJob (trainer.kubeflow.org/v1alpha1).

:func:`trainjob_manifest` builds the object from the spec (image, nodes, processes per
node, resources, GPU type, the volume holding data and checkpoints); the runtime
(``torch-distributed`` by default) starts ``torchrun`` on every node, which runs the same
entry point as a local run (``python -m aicd.components.training``). :func:`launch_trainjob`
creates it through a Kubernetes ``CustomObjectsApi``, waits, reports progress and raises a
TrainingError naming the failed condition.
"""

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aicd.components._images import TRAIN_IMAGE
from aicd.components.errors import TrainingError
from aicd.components.spec import Spec

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
DEFAULT_RUNTIME = "torch-distributed"
_JOB = "node"  # replicated job and container name in the torch runtimes
PVC_MOUNT = "/mnt/pvc"
# The claim for data, checkpoints and outputs: the one manifests/base creates and profiles mount.
DEFAULT_CLAIM = "aicd-checkpoints"


def _resources(spec: Spec) -> dict[str, Any]:
    r = spec.training.resources
    amounts: dict[str, Any] = {"cpu": r.cpu, "memory": r.memory}
    if r.gpus:
        amounts["nvidia.com/gpu"] = r.gpus
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _patch(spec: Spec, claim: str | None, grace_seconds: int) -> dict[str, Any]:
    r = spec.training.resources
    pod: dict[str, Any] = {"terminationGracePeriodSeconds": grace_seconds}
    if r.gpu_type:
        pod["nodeSelector"] = {"nvidia.com/gpu.product": r.gpu_type}
    if r.gpus:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if claim:
        # Mounted at /mnt/pvc/<claim>, as the platform profile mounts claims: pvc://<claim>/<path> resolves there.
        pod["volumes"] = [{"name": "aicd-claim", "persistentVolumeClaim": {"claimName": claim}}]
        pod["containers"] = [{"name": _JOB, "volumeMounts": [{"name": "aicd-claim",
                                                              "mountPath": f"{PVC_MOUNT}/{claim}"}]}]
    job = {"name": _JOB, "template": {"spec": {"template": {"spec": pod}}}}
    return {"manager": "aicd", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}}}


def trainjob_manifest(spec: Spec, name: str, args: list[str], *, namespace: str | None = None,
                      runtime: str = DEFAULT_RUNTIME, claim: str | None = None, image: str = TRAIN_IMAGE,
                      grace_seconds: int = 300, deadline_seconds: int | None = None) -> dict[str, Any]:
    """A TrainJob running ``python -m aicd.components.training ARGS`` on every process.

    ``claim`` is the PersistentVolumeClaim mounted at /mnt/pvc/<claim> (pvc://<claim>/... URIs resolve there);
    ``grace_seconds`` leaves time for the SIGTERM checkpoint when a node is preempted.;
    ``deadline_seconds`` is the job's ``activeDeadlineSeconds``. Nodes, processes per node, CPU,
    memory, GPUs and GPU type come from ``training.resources``.
    """
    r = spec.training.resources
    env = [{"name": "AICD_PVC_ROOT", "value": PVC_MOUNT}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": name, "namespace": namespace or spec.delivery.serving.namespace,
                     "labels": {"app.kubernetes.io/part-of": "aicd", "aicd.dev/spec": spec.name}},
        "spec": {
            "runtimeRef": {"name": runtime},
            "trainer": {"image": image, "command": ["python", "-m", "aicd.components.training"], "args": args,
                        "numNodes": r.num_nodes, "numProcPerNode": r.procs_per_node,
                        "resourcesPerNode": _resources(spec), "env": env},
            "runtimePatches": [_patch(spec, claim, grace_seconds)],
        },
    }
    if deadline_seconds:
        manifest["spec"]["activeDeadlineSeconds"] = int(deadline_seconds)
    return manifest


def train_adapter_args(spec: Spec, method: str, dataset_uri: str, output_uri: str,
                       start_uri: str | None = None) -> list[str]:
    """CLI arguments of the training entry point for one method (spec passed inline as JSON); ``start_uri``:
    the Model artifact a dpo method starts from."""
    return ["train-adapter", "--spec-json", json.dumps(spec.model_dump(mode="json"), sort_keys=True),
            "--dataset", dataset_uri, "--method", method, "--out", output_uri, "--no-progress",
            *(["--start", start_uri] if start_uri else [])]


def train_from_scratch_args(spec: Spec, dataset_uri: str, output_uri: str) -> list[str]:
    """CLI arguments of the training entry point for stage 4's model trained from scratch."""
    return ["train-from-scratch", "--spec-json", json.dumps(spec.model_dump(mode="json"), sort_keys=True),
            "--dataset", dataset_uri, "--out", output_uri, "--no-progress"]


def trainjob_name(spec: Spec, method: str, args: list[str]) -> str:
    """A stable name (DNS label): the same step and inputs give the same job, so a retry follows it."""
    import hashlib
    import re

    digest = hashlib.sha256("\0".join(args).encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]", "-", f"{spec.name}-{method}".lower())[:30].strip("-")
    return f"{stem}-{digest}"


def _condition(status: dict, kind: str) -> dict | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def _create(api, manifest: dict) -> None:
    from kubernetes.client.exceptions import ApiException

    meta = manifest["metadata"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, manifest)
    except ApiException as err:
        if err.status == 409:  # a retry of this step: follow the job that already exists
            log.info("TrainJob %s/%s exists already; following it", meta["namespace"], meta["name"])
            return
        hints = {404: "install Kubeflow Trainer (the TrainJob CRD) in the cluster",
                 403: f"the service account needs `create` on trainjobs.trainer.kubeflow.org in namespace "
                      f"{meta['namespace']} (and get/list/watch to follow it): apply manifests/overlays/<env>, "
                      "whose Role aicd-pipeline grants it, and run the pipeline as aicd-pipeline",
                 422: "the cluster rejected the object; check training.resources in the spec"}
        raise TrainingError(f"cannot create TrainJob {meta['namespace']}/{meta['name']}: "
                            f"HTTP {err.status} {err.reason}{_server_message(err)}",
                            hints.get(err.status, "check the cluster")) from err


def _server_message(err) -> str:
    """The API server's own words (e.g. which user may not create what), when it sent any."""
    try:
        message = json.loads(err.body or "{}").get("message")
    except (TypeError, ValueError):
        message = None
    return f": {message}" if message else ""


def launch_trainjob(api, manifest: dict, *, poll_seconds: float = 15.0, timeout_seconds: float = 7 * 24 * 3600,
                    on_progress: Callable[[dict], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> dict:
    """Create the TrainJob, wait until it completes, return its final status.

    ``api`` is a ``kubernetes.client.CustomObjectsApi`` (or any object with its
    create/get methods). Progress (``status.trainerStatus``) goes to ``on_progress``
    and the log. Raises TrainingError when the job fails or the timeout passes.
    """
    meta = manifest["metadata"]
    ns, name = meta["namespace"], meta["name"]
    _create(api, manifest)
    deadline, last = clock() + timeout_seconds, None
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        status = obj.get("status") or {}
        progress = status.get("trainerStatus") or {}
        if progress and progress != last:
            log.info("TrainJob %s: %s%% %s", name, progress.get("progressPercentage", "?"),
                     {m["name"]: m["value"] for m in progress.get("metrics", [])})
            if on_progress:
                on_progress(progress)
            last = progress
        if _condition(status, "Complete"):
            return status
        failed = _condition(status, "Failed")
        if failed:
            raise TrainingError(f"TrainJob {ns}/{name} failed: {failed.get('reason', 'unknown reason')}: "
                                f"{failed.get('message', '')}".rstrip(": "),
                                f"read the logs with `kubectl logs -n {ns} -l jobset.sigs.k8s.io/jobset-name={name}`")
        if clock() >= deadline:
            raise TrainingError(f"TrainJob {ns}/{name} did not finish within {timeout_seconds:.0f} s",
                                "raise the timeout or check why the job is pending (kubectl describe)")
        sleep(poll_seconds)
