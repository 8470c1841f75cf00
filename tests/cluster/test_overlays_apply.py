"""Every overlay applied for real to kube-apiserver 1.20.2 (tests/kube_server.py), twice, then deleted.

`kubectl apply -k --server-side` into a fresh namespace: the server checks every object against
the CRDs (KServe, Trainer, Argo CD, Prometheus operator; 1.20 transform, tools/k8s/crd-for-1.20.py)
and the built-in schemas. A second apply must change nothing (same resourceVersions). No
namespace controller runs here, so the test plays it when the Namespace is deleted (says so).
"""

import secrets

import pytest
import yaml

from kube_overlays import MANIFESTS, OVERLAYS, docs, finalize_namespace, in_namespace, resource_versions

pytestmark = pytest.mark.kube


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_applies_twice_and_deletes(kube_apiserver, tmp_path, overlay):
    server = kube_apiserver
    namespace = f"apply-{overlay}-{secrets.token_hex(3)}"
    folder = in_namespace(MANIFESTS / "overlays" / overlay, namespace, tmp_path / "kz")
    built = docs(server.kubectl("kustomize", str(folder)).stdout)
    kinds = {d["kind"] for d in built}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "NetworkPolicy",
            "ServingRuntime", "InferenceService"} <= kinds

    first = server.kubectl("apply", "--server-side", "--field-manager=aicd-test", "-k", str(folder))
    assert "created" in first.stdout or "serverside-applied" in first.stdout, first.stdout
    before = resource_versions(server, namespace, built)
    server.kubectl("apply", "--server-side", "--field-manager=aicd-test", "-k", str(folder))
    assert resource_versions(server, namespace, built) == before, "a second apply changed objects"

    server.kubectl("delete", "-k", str(folder), "--wait=false")
    for doc in built:
        if doc["kind"] == "Namespace":
            continue
        resource = f"{doc['kind'].lower()}.{doc['apiVersion'].rpartition('/')[0]}".rstrip(".")
        gone = server.kubectl("get", resource, doc["metadata"]["name"], "-n", namespace, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, f"{doc['kind']}/{doc['metadata']['name']} left"
    assert server.get_json("namespace", namespace)["status"]["phase"] == "Terminating"
    finalize_namespace(server, namespace)
    assert "NotFound" in server.kubectl("get", "namespace", namespace, check=False).stderr


def test_a_bad_object_is_refused(kube_apiserver, tmp_path):
    """Control: the server really validates custom resources (a badly typed InferenceService field gets 422)."""
    server = kube_apiserver
    namespace = server.namespace("bad")
    built = docs(server.kubectl("kustomize", str(MANIFESTS / "overlays" / "dev")).stdout)
    isvc = next(d for d in built if d["kind"] == "InferenceService")
    isvc["metadata"]["namespace"] = namespace
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    proc = server.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(isvc), check=False)
    assert proc.returncode != 0 and "minReplicas" in proc.stderr, proc.stdout + proc.stderr
