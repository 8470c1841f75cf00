"""RBAC of every overlay, asked of the real RBAC authorizer (`kubectl auth can-i --as=...`).

Each overlay is applied as shipped (its own namespace: aicd-dev, aicd-staging, aicd) to the
tests' kube-apiserver; then, for every service account, a table of what it must be allowed
(exactly what its pods and steps do) and what it must not (other namespaces, Secrets,
writes to serving objects, cluster scope).
"""

import pytest
from kube_overlays import MANIFESTS, OVERLAYS, SHIPPED_NAMESPACES

pytestmark = pytest.mark.kube

KSERVE, TRAINER = "inferenceservices.serving.kserve.io", "trainjobs.trainer.kubeflow.org"

# (verb, resource, name or None): what the pipeline's steps, KFP's driver and launcher do.
PIPELINE_MAY = [
    ("get", "pods", None), ("list", "pods", None), ("watch", "pods", None), ("get", "pods/log", None),
    ("get", "configmaps", "kfp-launcher"), ("get", "configmaps", "metadata-grpc-configmap"),
    ("get", KSERVE, None), ("list", KSERVE, None), ("watch", KSERVE, None),
    ("create", TRAINER, None), ("get", TRAINER, None), ("list", TRAINER, None), ("watch", TRAINER, None),
]
PIPELINE_MAY_NOT = [
    # Serving objects change through Git and Argo CD only.
    ("create", KSERVE, None), ("patch", KSERVE, None), ("update", KSERVE, None), ("delete", KSERVE, None),
    ("delete", TRAINER, None), ("patch", TRAINER, None),
    # Secrets reach the steps as mounted files: no API access at all, named or not.
    ("list", "secrets", None), ("get", "secrets", "gitops-credentials"), ("get", "secrets", "label-studio-token"),
    ("get", "secrets", "some-other-secret"), ("get", "configmaps", "some-other-config"), ("list", "configmaps", None),
    ("create", "pods", None), ("delete", "pods", None), ("create", "rolebindings", None),
]
# Neither the predictor nor the canary loop calls the API.
NOBODY_ELSE_MAY = [("get", "pods", None), ("get", KSERVE, None), ("get", "secrets", None), ("list", "secrets", None),
                   ("create", TRAINER, None), ("get", "configmaps", "kfp-launcher")]
CLUSTER_SCOPE = [("list", "namespaces"), ("list", "nodes"), ("create", "clusterrolebindings"),
                 ("list", "inferenceservices.serving.kserve.io"), ("get", "persistentvolumes")]
ACCOUNTS = ["aicd-pipeline", "aicd-predictor", "aicd-canary"]


@pytest.fixture(scope="module")
def shipped(kube_apiserver):
    """Every overlay applied as shipped; its namespace per overlay."""
    for overlay in OVERLAYS:
        kube_apiserver.kubectl("apply", "--server-side", "-k", str(MANIFESTS / "overlays" / overlay))
    return SHIPPED_NAMESPACES


def sa(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def ask(server, user, namespace, verb, resource, name=None) -> bool:
    return server.can_i(verb, resource, namespace, user, name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pipeline_account_may_do_what_its_steps_do(kube_apiserver, shipped, overlay):
    ns = shipped[overlay]
    denied = [(v, r, n) for v, r, n in PIPELINE_MAY if not ask(kube_apiserver, sa(ns, "aicd-pipeline"), ns, v, r, n)]
    assert denied == [], f"{ns}:aicd-pipeline may not {denied}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pipeline_account_may_do_nothing_more(kube_apiserver, shipped, overlay):
    ns = shipped[overlay]
    allowed = [(v, r, n) for v, r, n in PIPELINE_MAY_NOT if ask(kube_apiserver, sa(ns, "aicd-pipeline"), ns, v, r, n)]
    assert allowed == [], f"{ns}:aicd-pipeline may {allowed}"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("account", ["aicd-predictor", "aicd-canary"])
def test_other_accounts_call_no_api(kube_apiserver, shipped, overlay, account):
    ns = shipped[overlay]
    allowed = [(v, r, n) for v, r, n in NOBODY_ELSE_MAY if ask(kube_apiserver, sa(ns, account), ns, v, r, n)]
    assert allowed == [], f"{ns}:{account} may {allowed}"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("account", ACCOUNTS)
def test_no_account_reaches_other_namespaces_or_cluster_scope(kube_apiserver, shipped, overlay, account):
    ns, server = shipped[overlay], kube_apiserver
    user = sa(ns, account)
    others = [o for o in shipped.values() if o != ns] + ["kube-system", "default"]
    leaks = [(o, v, r) for o in others for v, r, _ in PIPELINE_MAY if ask(server, user, o, v, r)]
    leaks += [("<cluster>", v, r) for v, r in CLUSTER_SCOPE if server.can_i(v, r, None, user)]
    assert leaks == [], f"{ns}:{account} may {leaks}"


def test_binding_follows_the_overlay_namespace(kube_apiserver, shipped):
    """The finding, asked as the issue asked it: the production account aicd:aicd-pipeline could read pods
    and models in dev and staging, while the overlay's own account could do nothing."""
    for overlay in ("dev", "staging"):
        ns = shipped[overlay]
        assert kube_apiserver.kubectl_can_i("get", KSERVE, ns, sa(ns, "aicd-pipeline"))
        assert not kube_apiserver.kubectl_can_i("get", "pods", ns, sa("aicd", "aicd-pipeline"))
        assert not kube_apiserver.kubectl_can_i("get", KSERVE, ns, sa("aicd", "aicd-pipeline"))
