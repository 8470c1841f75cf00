"""Apply a platform profile to pipeline tasks with kfp-kubernetes.

Small helpers, each taking a task and returning it for chaining; :class:`Platform`
strings them together per step role. Only pipelines/ applies platform settings:
steps know nothing of GPUs, volumes or secrets.
"""

from dataclasses import dataclass
from typing import Any

from kfp import dsl

from aicd.pipelines.profiles import LOCAL, POD_LABELS, PVC_ROOT, SECRETS_ROOT, Profile, RoleSpec


class _NoCluster:
    """kfp-kubernetes' task settings where no cluster reads them: each call leaves the task as it is.

    kfp.local ignores a task's Kubernetes settings (node selectors, tolerations, volumes, Secrets,
    labels), and importing kfp-kubernetes loads the whole kubernetes client (about half a second of
    every local run's start); the settings that do reach a local step (environment, resources) stay.
    """

    def __getattr__(self, name: str):
        return lambda task, *args, **kwargs: task


def _settings(on_cluster: bool) -> Any:
    """kfp.kubernetes for a pipeline a cluster will run, else the no-op stand-in."""
    if not on_cluster:
        return _NoCluster()
    from kfp import kubernetes

    return kubernetes


def request_gpus(task: dsl.PipelineTask, spec: RoleSpec, kubernetes: Any) -> dsl.PipelineTask:
    """GPUs as an accelerator limit, and the GPU model through a node selector."""
    if spec.gpus:
        task.set_accelerator_type(spec.accelerator).set_accelerator_limit(spec.gpus)
        if spec.gpu_type:
            kubernetes.add_node_selector(task, spec.gpu_type_label, spec.gpu_type)
    return task


def set_resources(task: dsl.PipelineTask, spec: RoleSpec) -> dsl.PipelineTask:
    if spec.cpu:
        task.set_cpu_request(spec.cpu).set_cpu_limit(spec.cpu)
    if spec.memory:
        task.set_memory_request(spec.memory).set_memory_limit(spec.memory)
    return task


def place_on_nodes(task: dsl.PipelineTask, spec: RoleSpec, kubernetes: Any) -> dsl.PipelineTask:
    for key, value in sorted(spec.node_selector.items()):
        kubernetes.add_node_selector(task, key, value)
    for tol in spec.tolerations:
        kubernetes.add_toleration(task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect,
                                  toleration_seconds=tol.toleration_seconds)
    return task


def mount_volumes(task: dsl.PipelineTask, profile: Profile, roles: tuple[str, ...],
                  kubernetes: Any) -> dsl.PipelineTask:
    """Mount each claim of the ``roles`` at /mnt/pvc/<claim>; point the model cache and checkpoints at theirs."""
    for volume in profile.volumes:
        if not set(roles) & set(volume.roles):
            continue
        path = f"{PVC_ROOT}/{volume.claim}"
        kubernetes.mount_pvc(task, pvc_name=volume.claim, mount_path=path)
        if volume.purpose == "model-cache":
            task.set_env_variable("AICD_CACHE", path)
        elif volume.purpose == "checkpoints":
            task.set_env_variable("AICD_CHECKPOINT_ROOT", path)
    return task


def mount_secrets(task: dsl.PipelineTask, profile: Profile, roles: tuple[str, ...],
                  kubernetes: Any) -> dsl.PipelineTask:
    """Mount each Secret at /var/run/secrets/aicd/<name> (aicd.components.secrets reads it)."""
    for secret in profile.secrets:
        if set(roles) & set(secret.roles):
            kubernetes.use_secret_as_volume(task, secret_name=secret.name, mount_path=f"{SECRETS_ROOT}/{secret.name}")
    if profile.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(profile.image_pull_secrets))
    return task


def label_pod(task: dsl.PipelineTask, kubernetes: Any) -> dsl.PipelineTask:
    """Pod labels the manifests select on (the `delivery-egress` NetworkPolicy lets these pods out)."""
    for key, value in sorted(POD_LABELS.items()):
        kubernetes.add_pod_label(task, key, value)
    return task


def set_policy(task: dsl.PipelineTask, profile: Profile, cache: bool) -> dsl.PipelineTask:
    """Caching (off when the step must always run) and the retry policy."""
    task.set_caching_options(enable_caching=cache and profile.caching)
    retry = profile.retries
    if retry.count:
        task.set_retry(num_retries=retry.count, backoff_duration=f"{retry.backoff_seconds}s",
                       backoff_factor=retry.backoff_factor, backoff_max_duration=f"{retry.backoff_max_seconds}s")
    return task


@dataclass(frozen=True)
class Platform:
    """A profile bound to the helpers above; pipelines call :meth:`apply` on every task."""

    profile: Profile = LOCAL
    # False for a pipeline kfp.local runs (``aicd run``): its Kubernetes settings would be ignored.
    on_cluster: bool = True

    def apply(self, task: dsl.PipelineTask, role: str, cache: bool = True,
              also: tuple[str, ...] = ()) -> dsl.PipelineTask:
        """The role's settings; ``also``: roles whose volumes and Secrets the task needs as well."""
        spec, kubernetes = self.profile.role(role), _settings(self.on_cluster)
        request_gpus(task, spec, kubernetes)
        set_resources(task, spec)
        place_on_nodes(task, spec, kubernetes)
        mount_volumes(task, self.profile, (role, *also), kubernetes)
        mount_secrets(task, self.profile, (role, *also), kubernetes)
        label_pod(task, kubernetes)
        return set_policy(task, self.profile, cache)

    def launcher(self, task: dsl.PipelineTask, role: str = "train") -> dsl.PipelineTask:
        """A task that starts work elsewhere (a TrainJob): the role's volumes and secrets, no GPUs or pool."""
        kubernetes = _settings(self.on_cluster)
        mount_volumes(task, self.profile, (role,), kubernetes)
        mount_secrets(task, self.profile, (role,), kubernetes)
        label_pod(task, kubernetes)  # the NetworkPolicies let it reach the API server, Git and MinIO
        return set_policy(task, self.profile, True)
