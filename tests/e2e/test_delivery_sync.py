"""Waiting for the GitOps sync through Argo CD's Application, read from a real kube-apiserver.

The Argo CD controller does not run here: the test plays it by writing the Application's
status (sync revision and status, health), as Argo CD does after applying a commit.
"""

import threading

import pytest

from aicd.components.delivery import isvc
from aicd.components.delivery.readiness import wait_live
from aicd.components.spec import DeliverySpec

pytestmark = pytest.mark.e2e
ARGS = ("argoproj.io", "v1alpha1", "argocd", "applications")


@pytest.fixture
def argocd(kube_apiserver):  # noqa: F811
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(kube_apiserver.kubeconfig))
    kube_apiserver.ensure_namespace("argocd")
    return client.CustomObjectsApi(api_client), kube_apiserver.kubeconfig


def application(api, name: str, revision: str, sync: str, health: str) -> None:
    body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": name},
            "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc",
                                                           "namespace": "aicd"},
                     "source": {"repoURL": "https://git.example/gitops.git", "path": "manifests/overlays/dev",
                                "targetRevision": "main"}},
            "status": {"sync": {"status": sync, "revision": revision}, "health": {"status": health}}}
    try:
        current = api.get_namespaced_custom_object(*ARGS, name)
    except Exception:  # noqa: BLE001 - 404: create it
        api.create_namespaced_custom_object(*ARGS, body)
        return
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    api.replace_namespaced_custom_object(*ARGS, name, body)


def delivery(kubeconfig, name: str, timeout: float = 20) -> DeliverySpec:
    return DeliverySpec(gitops={"repo": "/unused"}, serving={"name": name},
                        sync={"via": "argocd", "kubeconfig": str(kubeconfig), "timeout_seconds": timeout,
                              "poll_seconds": 0.2})


def test_waits_until_synced_and_healthy_at_the_commit(argocd):
    api, kubeconfig = argocd
    application(api, "synced", "old0000", "Synced", "Healthy")
    later = threading.Timer(1.5, application, args=(api, "synced", "new1111", "Synced", "Healthy"))
    later.start()
    live = wait_live(delivery(kubeconfig, "synced"), isvc.RolloutState(None, None, None), {"new1111", "new2222"})
    later.join()
    assert live.ready and live.reason == "Argo CD synced and healthy at new1111" and live.waited_s >= 1.0


@pytest.mark.parametrize("revision, sync, health, timeout, reason", [
    ("new1111", "Synced", "Degraded", 20, "Argo CD reports the application Degraded at new1111"),
    ("old0000", "Synced", "Healthy", 1.5, "not live and Ready within delivery.sync.timeout_seconds=1.5: Argo CD is "
                                         "at revision old0000, not yet at the rollout's commit"),
    ("new1111", "OutOfSync", "Progressing", 1.5, "not live and Ready within delivery.sync.timeout_seconds=1.5: "
                                                 "Argo CD at new1111: OutOfSync, Progressing"),
])
def test_not_live_in_time_or_degraded(argocd, revision, sync, health, timeout, reason):
    api, kubeconfig = argocd
    name = f"app-{sync.lower()}-{health.lower()}-{revision}"
    application(api, name, revision, sync, health)
    live = wait_live(delivery(kubeconfig, name, timeout), isvc.RolloutState(None, None, None), {"new1111"})
    assert not live.ready and live.reason == reason
