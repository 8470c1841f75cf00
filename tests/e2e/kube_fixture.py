"""A real kube-apiserver 1.20.2 + etcd on 127.0.0.1 with the KServe, Argo CD and Trainer CRDs (rollout tests).

Minimal stand-in for the project-wide ``kube_apiserver`` session fixture (same name and the
``kubeconfig`` attribute), so the two can be swapped. Binaries: ``KUBE_APISERVER`` (default
``${AICD_CACHE:-~/.cache/aicd}/k8s/kube-apiserver``) and ``ETCD`` (default /usr/bin/etcd).
Missing binaries skip the tests on a developer machine and FAIL them when ``CI`` is set.
No controller runs: the tests play KServe and Argo CD by writing status, and say so.
"""

import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_DIRS = (ROOT / "tools" / "k8s" / "crds", ROOT / "tests" / "crds")
CRDS = ("serving.kserve.io_inferenceservices.yaml", "application-crd.yaml", "trainer.kubeflow.org_trainjobs.yaml")


def _for_1_20(node):
    """kube-apiserver 1.20 rejects `default: ""`, CEL rules and list-map keys without defaults."""
    if isinstance(node, dict):
        if node.get("default") == "":
            del node["default"]
        node.pop("x-kubernetes-validations", None)
        for value in node.values():
            _for_1_20(value)
        keys = node.get("x-kubernetes-list-map-keys")
        if keys:
            items = node.get("items", {})
            props = items.get("properties", {})
            if not all(k in items.get("required", []) or "default" in props.get(k, {}) for k in keys):
                node.pop("x-kubernetes-list-map-keys")
                node.pop("x-kubernetes-list-type", None)
    elif isinstance(node, list):
        for value in node:
            _for_1_20(value)
    return node


def _crd(name: str) -> dict:
    for folder in CRD_DIRS:
        found = list(folder.rglob(name)) if folder.is_dir() else []
        if found:
            return _for_1_20(next(d for d in yaml.safe_load_all(found[0].read_text()) if d))
    raise FileNotFoundError(f"CRD {name} is in none of {[str(d) for d in CRD_DIRS]}")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class KubeServer:
    kubeconfig: Path
    url: str
    token: str


def _binaries() -> tuple[str, str]:
    cache = Path(os.environ.get("AICD_CACHE", Path.home() / ".cache" / "aicd"))
    apiserver = os.environ.get("KUBE_APISERVER", str(cache / "k8s" / "kube-apiserver"))
    etcd = os.environ.get("ETCD", "/usr/bin/etcd")
    for var, path in (("KUBE_APISERVER", apiserver), ("ETCD", etcd)):
        if not os.access(path, os.X_OK):
            message = (f"{var}={path} is not an executable: build kube-apiserver 1.20.2 (SERVERS.md) or set "
                       f"{var}; etcd comes with `apt-get install etcd-server`")
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
    return apiserver, etcd


def _ready(url: str, token: str, ca: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            ctx = ssl.create_default_context(cafile=str(ca)) if ca.exists() else None
            req = urllib.request.Request(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
                if resp.read() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"kube-apiserver at {url} not ready")


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory):
    apiserver, etcd = _binaries()
    run = tmp_path_factory.mktemp("kube")
    (run / "certs").mkdir()
    subprocess.run(["openssl", "genrsa", "-out", str(run / "sa.key"), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(run / "sa.key"), "-pubout", "-out", str(run / "sa.pub")],
                   check=True, capture_output=True)
    token = secrets.token_hex(20)
    (run / "tokens.csv").write_text(f"{token},admin,admin-uid,system:masters\n")
    port, client, peer = _port(), _port(), _port()
    url = f"https://127.0.0.1:{port}"
    procs = [subprocess.Popen([
        etcd, "--name", "default", "--data-dir", str(run / "etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"default=http://127.0.0.1:{peer}", "--listen-metrics-urls", "",
        "--max-request-bytes", "10485760"], stdout=open(run / "etcd.log", "w"), stderr=subprocess.STDOUT)]
    try:
        procs.append(subprocess.Popen([
            apiserver, f"--etcd-servers=http://127.0.0.1:{client}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={port}", "--insecure-port=0",
            f"--cert-dir={run / 'certs'}", f"--token-auth-file={run / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={run / 'sa.pub'}", f"--service-account-signing-key-file={run / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount", "--profiling=false"],
            stdout=open(run / "apiserver.log", "w"), stderr=subprocess.STDOUT))
        ca = run / "certs" / "apiserver.crt"
        _ready(url, token, ca, time.monotonic() + 180)
        kubeconfig = run / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "local",
            "clusters": [{"name": "local", "cluster": {"server": url, "certificate-authority": str(ca)}}],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}]}))
        _install_crds(kubeconfig)
        yield KubeServer(kubeconfig, url, token)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _install_crds(kubeconfig: Path) -> None:
    from kubernetes import client, config

    api = client.ApiextensionsV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    for name in CRDS:
        crd = _crd(name)
        api.create_custom_resource_definition(crd)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = api.read_custom_resource_definition(crd["metadata"]["name"]).status
            if any(c.type == "Established" and c.status == "True" for c in status.conditions or []):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"CRD {crd['metadata']['name']} never became Established")
