"""Argo CD: the Applications and their AppProject apply to the real API server, and data survives a prune.

No Argo CD controller runs here; the Application and AppProject objects are checked by the
server against the CRDs (tools/k8s/crds/argo-cd), and the sync options are read from the overlays.
"""

import subprocess

import pytest
from kube_overlays import MANIFESTS, OVERLAYS, docs

KEEP = "argocd.argoproj.io/sync-options"


def build(path) -> list[dict]:
    return docs(subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True).stdout)


@pytest.mark.kube
def test_applications_and_project_apply(kube_apiserver):
    kube_apiserver.ensure_namespace("argocd")
    kube_apiserver.kubectl("apply", "--server-side", "-k", str(MANIFESTS / "argocd"))
    assert kube_apiserver.get_json("appproject", "aicd", "-n", "argocd")["spec"]["orphanedResources"] == {"warn": True}
    apps = kube_apiserver.get_json("applications.argoproj.io", "-n", "argocd")["items"]
    assert sorted(a["spec"]["project"] for a in apps) == ["aicd"] * 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_stateful_objects_are_never_pruned_or_deleted(overlay):
    for doc in build(MANIFESTS / "overlays" / overlay):
        if doc["kind"] in ("Namespace", "PersistentVolumeClaim"):
            options = (doc["metadata"].get("annotations") or {}).get(KEEP, "")
            assert {"Prune=false", "Delete=false"} <= set(options.split(",")), doc["metadata"]["name"]


def test_the_project_admits_exactly_what_the_overlays_hold():
    argocd = build(MANIFESTS / "argocd")
    project = next(d for d in argocd if d["kind"] == "AppProject")
    apps = [d for d in argocd if d["kind"] == "Application"]
    destinations = {(d["server"], d["namespace"]) for d in project["spec"]["destinations"]}
    for app in apps:
        assert app["spec"]["project"] == project["metadata"]["name"]
        assert (app["spec"]["destination"]["server"], app["spec"]["destination"]["namespace"]) in destinations
        assert app["spec"]["source"]["repoURL"] in project["spec"]["sourceRepos"]
    allowed = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    allowed |= {(k["group"], k["kind"]) for k in project["spec"]["clusterResourceWhitelist"]}
    for overlay in OVERLAYS:
        held = {(d["apiVersion"].rpartition("/")[0], d["kind"]) for d in build(MANIFESTS / "overlays" / overlay)}
        assert held <= allowed, (overlay, held - allowed)
