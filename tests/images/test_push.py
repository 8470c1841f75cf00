"""`make images push` against a real registry (Debian's docker-registry, the CNCF distribution
server, on 127.0.0.1): the image is pushed, its digest recorded, and a pipeline compiled with
AICD_IMAGE_DIGESTS references exactly what the registry serves.

To stay quick, the pushed "base" role is the small Debian-made Python base retagged, not the
2 GB role image: the push path does not depend on what the image holds."""

import json
import subprocess
import time

import httpx
import pytest
import yaml
from helpers.ports import free_port
from podman_tools import ROOT, SCRIPT, engine_env, require

pytestmark = pytest.mark.images


@pytest.fixture
def registry(tmp_path):
    binary = require("docker-registry")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(yaml.safe_dump({"version": 0.1,
                                      "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
                                      "http": {"addr": f"127.0.0.1:{port}"}}))
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "docker-registry did not start"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_push_records_digests_that_compiled_pipelines_pin(registry, tmp_path):
    require("podman")
    env = {**engine_env(), "REGISTRY": f"{registry}/ml", "TAG": "t1", "ROLES": "base", "TLS_VERIFY": "false",
           "DIGESTS": str(tmp_path / "image-digests.json")}
    base = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", "localhost/aicd-python-base"],
                          env=env, capture_output=True, text=True, check=True).stdout.split()
    assert base, "make images makes the Debian base first"
    name = f"{registry}/ml/aicd-base:t1"
    subprocess.run(["podman", "tag", base[0], name], env=env, check=True)
    try:
        push = subprocess.run([str(SCRIPT), "push"], env=env, capture_output=True, text=True)
        assert push.returncode == 0, push.stderr
        digests = json.loads((tmp_path / "image-digests.json").read_text())
        served = httpx.head(f"http://{registry}/v2/ml/aicd-base/manifests/t1", headers={"accept": ", ".join([
            "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])})
        assert digests == {"base": served.headers["docker-content-digest"]}

        subprocess.run([str(ROOT / ".venv" / "bin" / "aicd"), "compile", "finetune", "--out", str(tmp_path / "ir"),
                        "--registry", f"{registry}/ml", "--tag", "t1"], check=True, capture_output=True,
                       env={**env, "AICD_IMAGE_DIGESTS": str(tmp_path / "image-digests.json")})
        ir = next(yaml.safe_load_all((tmp_path / "ir" / "finetune.yaml").read_text()))
        images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
        assert f"{name}@{digests['base']}" in images
        pulled = subprocess.run(["podman", "pull", "-q", "--tls-verify=false", f"{name}@{digests['base']}"], env=env,
                                capture_output=True, text=True)
        assert pulled.returncode == 0, pulled.stderr
    finally:
        subprocess.run(["podman", "rmi", "-f", name], env=env, capture_output=True)
