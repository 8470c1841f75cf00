"""Render and apply the project's kustomize overlays against the tests' API server."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ["dev", "staging", "production"]
SHIPPED_NAMESPACES = {"dev": "aicd-dev", "staging": "aicd-staging", "production": "aicd"}


def in_namespace(overlay: Path, namespace: str, folder: Path) -> Path:
    """A kustomization that takes `overlay` as it is and only moves it to `namespace`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": namespace, "resources": [str(overlay)]}))
    return folder


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def resource_versions(server, namespace: str, built: list[dict]) -> dict[str, str]:
    """resourceVersion of every object of a build, read back from the server."""
    versions = {}
    for doc in built:
        kind, name = doc["kind"], doc["metadata"]["name"]
        scope = [] if kind == "Namespace" else ["-n", namespace]
        resource = f"{kind.lower()}.{doc['apiVersion'].rpartition('/')[0]}".rstrip(".")
        obj = server.get_json(resource, name, *scope)
        versions[f"{kind}/{name}"] = obj["metadata"]["resourceVersion"]
    return versions


def finalize_namespace(server, namespace: str) -> None:
    """Play the namespace controller (none runs here): drop the `kubernetes` finalizer of a Terminating namespace."""
    obj = server.get_json("namespace", namespace)
    obj["spec"]["finalizers"] = []
    server.kubectl("replace", "--raw", f"/api/v1/namespaces/{namespace}/finalize", "-f", "-", input=yaml.safe_dump(obj))
