"""A real Kubernetes API server for the tests: etcd + kube-apiserver 1.20.2 on 127.0.0.1.

Token authentication (one admin token in group system:masters) and the RBAC authorizer, so
`kubectl auth can-i --as=system:serviceaccount:NS:SA` is answered by the real authorizer.
The project's CRDs (tools/k8s/crds) are installed after the 1.20 transform
(tools/k8s/crd-for-1.20.py). No controllers run: no pods start, no default service accounts
are made (ServiceAccount admission is off), and tests that need a controller (Trainer, KServe,
Argo CD) play it by writing status, and say so.

Binaries: ``KUBE_APISERVER`` and ``ETCD`` when set (for example envtest's); otherwise the
kube-apiserver that `make kube-apiserver` built into the cache
(tools/k8s/build-kube-apiserver.sh --cached) and Debian's /usr/bin/etcd.
"""

import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from helpers.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
K8S_TOOLS = ROOT / "tools" / "k8s"
CRDS = K8S_TOOLS / "crds"
log = logging.getLogger(__name__)


class KubeServerUnavailable(RuntimeError):
    """A binary the server needs is missing; the message says how to get it."""


def find_binaries() -> tuple[str, str]:
    """(kube-apiserver, etcd) paths, or KubeServerUnavailable naming the fix."""
    apiserver = os.environ.get("KUBE_APISERVER")
    if not apiserver:
        proc = subprocess.run([str(K8S_TOOLS / "build-kube-apiserver.sh"), "--cached"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise KubeServerUnavailable("no kube-apiserver: run `make kube-apiserver` (builds it once into "
                                        "$AICD_CACHE) or set KUBE_APISERVER to a kube-apiserver binary")
        apiserver = proc.stdout.strip()
    etcd = os.environ.get("ETCD") or shutil.which("etcd") or "/usr/bin/etcd"
    for name, path in (("KUBE_APISERVER", apiserver), ("ETCD", etcd)):
        if not os.access(path, os.X_OK):
            raise KubeServerUnavailable(f"{name}={path} is not an executable; install it (`make services` "
                                        "installs etcd-server) or point the variable at the binary")
    return apiserver, etcd


def _write_service_account_keys(private: Path, public: Path) -> None:
    """The RSA pair kube-apiserver signs and checks service account tokens with."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class KubeServer:
    """A running server: its URL, the admin token, a kubeconfig, and kubectl helpers."""

    run_dir: Path
    url: str = ""
    token: str = ""
    kubeconfig: Path = field(init=False)
    _procs: list = field(default_factory=list, repr=False)
    _namespaces: int = 0
    _authz: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.kubeconfig = self.run_dir / "kubeconfig"

    # -- start / stop ------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> "KubeServer":
        apiserver, etcd = find_binaries()
        run = self.run_dir
        (run / "certs").mkdir(parents=True, exist_ok=True)
        _write_service_account_keys(run / "sa.key", run / "sa.pub")
        self.token = secrets.token_hex(20)
        (run / "tokens.csv").write_text(f"{self.token},admin,admin-uid,system:masters\n")
        port, client, peer = free_port(), free_port(), free_port()
        self.url = f"https://127.0.0.1:{port}"
        self._procs.append(self._spawn("etcd", [
            etcd, "--name", "default", "--data-dir", str(run / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}", "--listen-metrics-urls", "",
            # The KServe InferenceService CRD is about 2 MB.
            "--max-request-bytes", "10485760"]))
        self._procs.append(self._spawn("apiserver", [
            apiserver, f"--etcd-servers=http://127.0.0.1:{client}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={port}", "--insecure-port=0",
            f"--cert-dir={run / 'certs'}", f"--token-auth-file={run / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={run / 'sa.pub'}", f"--service-account-signing-key-file={run / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none",
            # No controller-manager creates default service accounts, so ServiceAccount admission is off.
            "--disable-admission-plugins=ServiceAccount", "--profiling=false"]))
        self._wait_ready(timeout)
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "local",
            "clusters": [{"name": "local", "cluster": {"server": self.url,
                                                       "certificate-authority": str(run / "certs" / "apiserver.crt")}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}]}))
        return self

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        logfile = open(self.run_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self, timeout: float) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the cert is written as the server starts
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc, name in zip(self._procs, ("etcd", "apiserver")):
                if proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{name} exited with {proc.returncode}: "
                                       f"{(self.run_dir / f'{name}.log').read_text()[-2000:]}")
            try:
                req = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"})
                if urllib.request.urlopen(req, timeout=2, context=ctx).read() == b"ok":
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"kube-apiserver not ready in {timeout:.0f} s; see {self.run_dir / 'apiserver.log'}")

    def stop(self) -> None:
        for proc in reversed(self._procs):
            _stop(proc)
        self._procs.clear()

    # -- helpers -----------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run kubectl against this server; with check, a failure raises with kubectl's stderr."""
        proc = subprocess.run(["kubectl", f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def install_crds(self, crds: Path = CRDS) -> list[str]:
        """Transform the project's CRDs for 1.20 (cached by content) and create them; wait until Established."""
        files = sorted(crds.rglob("*.yaml"))
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in [K8S_TOOLS / "crd-for-1.20.py", *files]))
        cache = Path(os.environ.get("AICD_CACHE", Path.home() / ".cache" / "aicd"))
        out = cache / "crds-1.20" / digest.hexdigest()[:16]
        if not (out / ".done").is_file():
            tmp = out.with_name(out.name + f".tmp{os.getpid()}")
            subprocess.run([sys.executable, str(K8S_TOOLS / "crd-for-1.20.py"), str(tmp), *map(str, files)],
                           check=True, capture_output=True, text=True)
            (tmp / ".done").touch()
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        # create, not apply: server-side apply of the 2 MB InferenceService CRD costs a minute of field tracking.
        self.kubectl("create", "--validate=false", "-f", str(out))
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        names = [d["metadata"]["name"] for f in sorted(out.glob("*.yaml"))
                 for d in yaml.load_all(f.read_text(), Loader=loader) if d]
        self.kubectl("wait", "--for=condition=Established", "--timeout=120s", *[f"crd/{n}" for n in names])
        return names

    def namespace(self, prefix: str = "t") -> str:
        """A fresh namespace for one test."""
        self._namespaces += 1
        name = f"{prefix}-{self._namespaces}-{secrets.token_hex(3)}"
        self.kubectl("create", "namespace", name)
        return name

    def ensure_namespace(self, name: str) -> str:
        """Namespace ``name``, created unless there: the API server is shared by the whole session, so a
        fixed name (``aicd``, ``argocd``) may already be taken by another module's objects."""
        if self.kubectl("get", "namespace", name, check=False).returncode != 0:
            self.kubectl("create", "namespace", name)
        return name

    def can_i(self, verb: str, resource: str, namespace: str | None, user: str, name: str | None = None) -> bool:
        """The RBAC authorizer's answer for `user` (e.g. system:serviceaccount:NS:SA), by SubjectAccessReview.

        ``resource`` as kubectl writes it: ``pods``, ``pods/log``, ``trainjobs.trainer.kubeflow.org``;
        ``namespace`` None asks across all namespaces (cluster scope).
        """
        from kubernetes import client

        plural, _, subresource = resource.partition("/")
        plural, _, group = plural.partition(".")
        groups = [f"system:serviceaccounts:{user.split(':')[2]}", "system:serviceaccounts", "system:authenticated"] \
            if user.startswith("system:serviceaccount:") else ["system:authenticated"]
        review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=user, groups=groups, resource_attributes=client.V1ResourceAttributes(
                verb=verb, group=group, resource=plural, subresource=subresource or None, name=name,
                namespace=namespace or "")))
        if self._authz is None:
            self._authz = client.AuthorizationV1Api(self.api_client())
        return bool(self._authz.create_subject_access_review(review).status.allowed)

    def kubectl_can_i(self, verb: str, resource: str, namespace: str, user: str) -> bool:
        """The same question through `kubectl auth can-i --as=USER` (impersonation, as a platform team asks it)."""
        proc = self.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", check=False)
        answer = proc.stdout.strip()
        if answer not in ("yes", "no"):
            raise AssertionError(f"kubectl auth can-i {verb} {resource}: {proc.stdout}{proc.stderr}")
        return answer == "yes"

    def api_client(self, as_user: str | None = None):
        """A kubernetes.client.ApiClient as admin, or impersonating `as_user`."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        api = client.ApiClient(cfg)
        if as_user:
            api.set_default_header("Impersonate-User", as_user)
        return api

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)
