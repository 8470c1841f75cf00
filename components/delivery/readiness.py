"""Wait until a GitOps commit is live before measuring it (``delivery.sync``).

- ``argocd``: the Argo CD Application reports ``Synced`` at one of the expected revisions and
  ``Healthy`` (``Degraded`` ends the wait at once);
- ``inferenceservice``: the InferenceService in the cluster declares the same canary (model id
  annotation and traffic) as Git, its status has caught up with its generation, and it is
  ``Ready`` (a ``Ready`` condition that says the pod is crash-looping ends the wait at once);
- ``none``: no cluster to ask (local runs): live at once.

The wait is bounded by ``delivery.sync.timeout_seconds``; the caller rolls back a canary that is
not live and Ready by then.
"""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aicd.components.delivery import isvc
from aicd.components.errors import DeliveryError
from aicd.components.spec import DeliverySpec

log = logging.getLogger(__name__)
_FATAL = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "OOMKilled")


@dataclass(frozen=True)
class Live:
    ready: bool
    reason: str
    waited_s: float = 0.0


def _api(delivery: DeliverySpec):
    from kubernetes import client, config

    try:
        if delivery.sync.kubeconfig:
            config.load_kube_config(config_file=delivery.sync.kubeconfig)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config()
    except (config.ConfigException, OSError) as err:
        raise DeliveryError(f"no Kubernetes API to wait on for delivery.sync.via={delivery.sync.via!r}: {err}",
                            "run in the cluster, set `delivery.sync.kubeconfig`, or set `delivery.sync.via: none`"
                            ) from None
    return client.CustomObjectsApi()


def _get(api, group: str, version: str, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return api.get_namespaced_custom_object(group, version, namespace, plural, name)
    except ApiException as err:
        if err.status == 404:
            return None
        raise DeliveryError(f"the Kubernetes API refused to read {plural}/{name} in {namespace}: HTTP {err.status} "
                            f"{err.reason}", "grant the pipeline's service account `get` on it (manifests/base "
                                             "RBAC)") from None


def argocd_status(app: dict[str, Any] | None, revisions: set[str]) -> tuple[bool | None, str]:
    """(live, reason) of an Argo CD Application: True synced+healthy at a revision, False degraded, None wait."""
    if app is None:
        return None, "the Argo CD Application does not exist yet"
    status = app.get("status") or {}
    sync, health = status.get("sync") or {}, (status.get("health") or {}).get("status")
    revision = sync.get("revision", "")
    if health == "Degraded":
        return False, f"Argo CD reports the application Degraded at {revision[:12]}"
    if revision not in revisions:
        return None, f"Argo CD is at revision {revision[:12] or 'none'}, not yet at the rollout's commit"
    if sync.get("status") == "Synced" and health == "Healthy":
        return True, f"Argo CD synced and healthy at {revision[:12]}"
    return None, f"Argo CD at {revision[:12]}: {sync.get('status')}, {health}"


def isvc_status(obj: dict[str, Any] | None, declared: isvc.RolloutState) -> tuple[bool | None, str]:
    """(live, reason) of an InferenceService against the rollout state Git declares."""
    if obj is None:
        return None, "the InferenceService does not exist yet"
    live = isvc.state(obj)
    if (live.canary, live.traffic) != (declared.canary, declared.traffic):
        return None, f"the cluster still declares canary {live.canary} at {live.traffic}%"
    status = obj.get("status") or {}
    if status.get("observedGeneration", 0) < obj["metadata"].get("generation", 0):
        return None, "the InferenceService status has not caught up with its generation"
    ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
    if ready and ready.get("status") == "True":
        return True, "the InferenceService is Ready"
    detail = f"{(ready or {}).get('reason', '')} {(ready or {}).get('message', '')}".strip() or "no Ready condition"
    if any(word in detail for word in _FATAL):
        return False, f"the InferenceService is not Ready: {detail}"
    return None, f"the InferenceService is not Ready yet: {detail}"


def wait_live(delivery: DeliverySpec, declared: isvc.RolloutState, revisions: set[str],
              sleep: Callable[[float], None] = time.sleep) -> Live:
    """Poll until the commit is live and Ready, it fails, or ``delivery.sync.timeout_seconds`` pass."""
    sync = delivery.sync
    if sync.via == "none":
        return Live(True, "delivery.sync.via is none: not waiting")
    api, started = _api(delivery), time.monotonic()
    ns, name = delivery.serving.namespace, delivery.serving.name
    while True:
        if sync.via == "argocd":
            app = _get(api, "argoproj.io", "v1alpha1", sync.application_namespace, "applications",
                       sync.application or name)
            ok, reason = argocd_status(app, revisions)
        else:
            ok, reason = isvc_status(_get(api, "serving.kserve.io", "v1beta1", ns, "inferenceservices", name),
                                     declared)
        waited = time.monotonic() - started
        if ok is not None:
            return Live(ok, reason, waited)
        if waited >= sync.timeout_seconds:
            return Live(False, f"not live and Ready within delivery.sync.timeout_seconds={sync.timeout_seconds:g}: "
                               f"{reason}", waited)
        log.info("waiting for the rollout's commit to be live: %s", reason)
        sleep(sync.poll_seconds)
