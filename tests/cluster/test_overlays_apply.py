"""Every overlay applied for real to kube-apiserver 1.20.2 (tests/kube_server.py), twice, then deleted.

`kubectl apply -k --server-side` into a fresh namespace: the server checks every object against
the CRDs (KServe, Trainer, Argo CD, Prometheus operator; 1.20 transform, tools/k8s/crd-for-1.20.py)
and the built-in schemas. A second apply must change nothing (the stored objects stay equal). No
controller-manager runs here, so the test plays the namespace and pvc-protection controllers
(removes their finalizers) when the Namespace and the claims are deleted.
"""

import secrets

import pytest
import yaml
from kube_overlays import MANIFESTS, OVERLAYS, docs, finalize_namespace, in_namespace, stored

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
    before = stored(server, folder)
    server.kubectl("apply", "--server-side", "--field-manager=aicd-test", "-k", str(folder))
    after = stored(server, folder)
    assert len(before) == len(built) and after.keys() == before.keys()
    changed = [key for key in before if before[key] != after[key]]
    assert changed == [], f"a second apply changed {changed}"

    server.kubectl("delete", "-k", str(folder), "--wait=false")
    for doc in built:
        if doc["kind"] == "Namespace":
            continue
        resource = f"{doc['kind'].lower()}.{doc['apiVersion'].rpartition('/')[0]}".rstrip(".")
        if doc["kind"] == "PersistentVolumeClaim":  # play the pvc-protection controller: no pod uses the claim
            claim = server.get_json(resource, doc["metadata"]["name"], "-n", namespace)
            assert claim["metadata"]["deletionTimestamp"] and claim["metadata"]["finalizers"] == [
                "kubernetes.io/pvc-protection"], claim["metadata"]
            server.kubectl("patch", resource, doc["metadata"]["name"], "-n", namespace, "--type=merge",
                           "-p", '{"metadata":{"finalizers":null}}')
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
