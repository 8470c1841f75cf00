#!/usr/bin/env python3
"""Serve what a GitOps overlay declares from the serve image, as KServe would, and ask it once.

    serve-from-gitops.py REPO OVERLAY [--branch main] [--image IMAGE] [--port 8080] [--prompt TEXT]...

Reads the InferenceService of OVERLAY at the tip of BRANCH in the GitOps repository REPO (a local
bare repository such as make demo's `.aicd/gitops.git`), plays KServe's storage initializer (every
`--adapter NAME=FOLDER` of the stable predictor is copied into a models folder mounted read-only at
/mnt/models/NAME), starts the ServingRuntime's command with the predictor's arguments in IMAGE (uid
10001, read-only root, a writable /tmp, published on 127.0.0.1:PORT only), waits for
/v2/health/ready and asks every served model through the openai client. `make demo-image` runs it
on the adapter `make demo` promoted. The container is removed at the end (--keep leaves it running).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMMAND = ["python", "-m", "aicd.components.serving", "--host", "0.0.0.0", "--port", "8080"]
POD = ["--read-only", "--tmpfs", "/tmp:rw,exec,size=4g", "--user", "10001:10001", "--env", "OMP_NUM_THREADS=1"]


def fail(message: str, fix: str) -> None:
    print(f"serve-from-gitops: error: {message}\n  fix: {fix}", file=sys.stderr)
    sys.exit(1)


def declared_args(repo: Path, overlay: str, branch: str) -> list[str]:
    """The stable predictor's arguments in OVERLAY's inferenceservice.yaml at the tip of BRANCH."""
    path = f"{overlay.rstrip('/')}/inferenceservice.yaml"
    shown = subprocess.run(["git", "--git-dir", str(repo), "show", f"{branch}:{path}"], capture_output=True,
                           text=True)
    if shown.returncode != 0:
        fail(f"no {path} on branch {branch} of {repo}: {shown.stderr.strip()}",
             "run make demo first (it seeds and promotes into .aicd/gitops.git), or name another overlay")
    doc = yaml.safe_load(shown.stdout)
    args = (((doc.get("spec") or {}).get("predictor") or {}).get("model") or {}).get("args")
    if not args:
        fail(f"{path} declares no predictor arguments", "promote a model into this overlay first")
    return [str(a) for a in args]


def storage_initializer(args: list[str], models: Path) -> list[str]:
    """Copy each local adapter folder to MODELS/NAME and point its flag at /mnt/models/NAME."""
    out = []
    for i, arg in enumerate(args):
        if i and args[i - 1] == "--adapter":
            name, _, source = arg.partition("=")
            if not Path(source).is_dir():
                fail(f"adapter {name} is at {source}, which is not a folder here",
                     "this tool serves local folders only; on a cluster KServe's storage initializer fetches it")
            shutil.copytree(source, models / name)
            arg = f"{name}=/mnt/models/{name}"
        out.append(arg)
    for path in [models, *models.rglob("*")]:
        if os.geteuid() == 0:
            os.chown(path, 10001, 10001)
        else:
            path.chmod(path.stat().st_mode | 0o055)
    return out


def wait_ready(url: str, name: str, timeout: float) -> float:
    started = time.monotonic()
    while True:
        state = subprocess.run(["podman", "inspect", "--format", "{{.State.Status}}", name], capture_output=True,
                               text=True).stdout.strip()
        if state != "running":
            logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
            fail(f"the predictor container is {state or 'gone'}:\n{(logs.stdout + logs.stderr)[-3000:]}",
                 "read the predictor's error above")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        if time.monotonic() - started > timeout:
            fail(f"not ready after {timeout:.0f} s", f"see `podman logs {name}`")
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("repo", type=Path)
    p.add_argument("overlay")
    p.add_argument("--branch", default="main")
    p.add_argument("--image", default="ghcr.io/aicd/aicd-serve:0.1.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--prompt", action="append", help="ask this (repeatable); default: one support question")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--keep", action="store_true", help="leave the container running")
    args = p.parse_args(argv)
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "tools" / "podman" / "containers.conf"))  # this host's runc
    if shutil.which("podman") is None:
        fail("podman is not installed", "make images installs it (apt-get install podman runc)")
    if subprocess.run(["podman", "image", "exists", args.image]).returncode != 0:
        fail(f"image {args.image} is not built here", "build the role images first: make images")
    predictor = declared_args(args.repo, args.overlay, args.branch)
    models = Path(tempfile.mkdtemp(prefix="aicd-models-"))
    name = f"aicd-serve-{os.getpid()}"
    try:
        predictor = storage_initializer(predictor, models)
        run = subprocess.run(["podman", "run", "-d", "--name", name, *POD, "--network", "bridge", "-p",
                              f"127.0.0.1:{args.port}:8080", "-v", f"{models}:/mnt/models:ro", args.image, *COMMAND,
                              *predictor], capture_output=True, text=True)
        if run.returncode != 0:
            fail(f"podman run failed: {run.stderr.strip()}", f"is port {args.port} free? try --port")
        url = f"http://127.0.0.1:{args.port}"
        ready = wait_ready(url, name, args.timeout)
        client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0, timeout=300)
        served = sorted(m.id for m in client.models.list())
        answers = {}
        for prompt in args.prompt or ["How do I reset my password?"]:
            for model in served:
                reply = client.chat.completions.create(model=model, max_tokens=32, temperature=0,
                                                       messages=[{"role": "user", "content": prompt}])
                answers.setdefault(prompt, {})[model] = reply.choices[0].message.content
        print(json.dumps({"image": args.image, "overlay": args.overlay, "ready_after_s": round(ready, 1),
                          "models": served, "answers": answers}, indent=2, ensure_ascii=False))
        if args.keep:
            print(f"serving at {url} (container {name}); stop it with: podman rm -f {name}", file=sys.stderr)
        return 0
    finally:
        if not args.keep:
            subprocess.run(["podman", "rm", "-f", name], capture_output=True)
            shutil.rmtree(models, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
