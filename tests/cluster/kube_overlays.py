"""Render and apply the project's kustomize overlays against the tests' API server."""

import json
import os
import subprocess
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
        "namespace": namespace, "resources": [os.path.relpath(overlay, folder)]}))  # kustomize refuses absolute
    return folder


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def stored(server, folder: Path) -> dict[str, dict]:
    """Every object of a kustomization as the server stores it (one `kubectl get -k`), without what
    changes on any write (resourceVersion, managedFields, generation): what an apply could really change."""
    objects = {}
    for obj in server.get_json("-k", str(folder))["items"]:
        for key in ("resourceVersion", "managedFields", "generation"):
            obj["metadata"].pop(key, None)
        objects[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return objects


def finalize_namespace(server, namespace: str) -> None:
    """Play the namespace controller (none runs here): drop the `kubernetes` finalizer of a Terminating namespace."""
    obj = server.get_json("namespace", namespace)
    obj["spec"]["finalizers"] = []
    server.kubectl("replace", "--raw", f"/api/v1/namespaces/{namespace}/finalize", "-f", "-", input=json.dumps(obj))


def blessing(card: dict, champion: dict | None) -> dict:
    """A passing blessing of the adapter with this card over ``champion`` (promotion reads no more)."""
    return {"passed": True, "reasons": ["ok"], "candidate_digest": card["digest"], "candidate": {},
            "champion": champion}


def apply_overlay(server, spec, repo, tmp, namespace: str, step: str) -> dict:
    """Build the repository's overlay, move it to `namespace`, apply it; the InferenceService as stored."""
    clone = tmp / f"clone-{step}"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    built = docs(server.kubectl("kustomize", str(clone / spec.delivery.gitops.path)).stdout)
    for doc in built:
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = namespace
        else:
            doc["metadata"]["namespace"] = namespace
    server.kubectl("apply", "--server-side", "--field-manager=argocd", "-f", "-", input=yaml.safe_dump_all(built))
    return server.get_json("inferenceservices.serving.kserve.io", spec.delivery.serving.name, "-n", namespace)
